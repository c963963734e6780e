//! Envoy's priority levels: EDS may put endpoints at priorities 0, 1, 2 …
//! (Istio does so for locality failover: the proxy's own locality first,
//! then its region, then the failover region, then the rest). Traffic goes
//! to priority 0 while it is healthy enough and spills to the next levels
//! as it loses health, with Envoy's overprovisioning factor of 1.4. Within
//! a priority, locality-weighted balancing scales each locality's weight
//! by its health the same way.

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: usize = 140;

/// Given (usable, total) endpoint counts per priority, the cumulative
/// percent of traffic per priority (the last is 100) and the normalized
/// total health (0–100) that the panic threshold is compared with.
pub fn priority_load(levels: &[(usize, usize)]) -> (Vec<u32>, u32) {
    if levels.is_empty() {
        return (vec![100], 0);
    }
    let health: Vec<u32> = levels
        .iter()
        .map(|&(usable, total)| {
            (OVERPROVISIONING * usable)
                .checked_div(total)
                .map_or(0, |h| h.min(100) as u32)
        })
        .collect();
    let sum: u32 = health.iter().sum();
    let total_health = sum.min(100);
    let mut load = vec![0u32; levels.len()];
    if sum == 0 {
        // Nothing healthy anywhere: priority 0 takes everything (and the
        // balancer finds nothing there unless in panic mode).
        load[0] = 100;
    } else if sum >= 100 {
        let mut left = 100u32;
        for (l, h) in load.iter_mut().zip(&health) {
            *l = (*h).min(left);
            left -= *l;
        }
    } else {
        // Not enough health in total: scale up to 100 in proportion.
        for (l, h) in load.iter_mut().zip(&health) {
            *l = h * 100 / sum;
        }
        let rest = 100 - load.iter().sum::<u32>();
        if let Some(first) = load.iter().position(|l| *l > 0) {
            load[first] += rest;
        }
    }
    let mut acc = 0;
    let cumulative = load
        .iter()
        .map(|l| {
            acc += l;
            acc
        })
        .collect();
    (cumulative, total_health)
}

/// Envoy's effective weight of a locality in locality-weighted balancing:
/// its weight scaled by its availability, min(1, usable/total × 1.4), in
/// hundredths (0 when nothing in it is usable).
pub fn locality_weight(weight: u32, usable: usize, total: usize) -> u64 {
    let availability = (OVERPROVISIONING * usable)
        .checked_div(total)
        .map_or(0, |a| a.min(100)) as u64;
    u64::from(weight) * availability
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_weight_follows_health_with_overprovisioning() {
        assert_eq!(locality_weight(80, 4, 4), 8000);
        // 3 of 4 usable: 105% capped at 100%.
        assert_eq!(locality_weight(80, 3, 4), 8000);
        // 1 of 2 usable: 70%.
        assert_eq!(locality_weight(20, 1, 2), 1400);
        assert_eq!(locality_weight(20, 0, 2), 0);
        assert_eq!(locality_weight(20, 0, 0), 0);
    }

    #[test]
    fn healthy_priority_zero_takes_everything() {
        assert_eq!(priority_load(&[(3, 3), (2, 2)]), (vec![100, 100], 100));
    }

    #[test]
    fn traffic_spills_as_priority_zero_loses_health() {
        // 1 of 2 healthy: 70% stays, 30% spills to priority 1.
        assert_eq!(priority_load(&[(1, 2), (2, 2)]), (vec![70, 100], 100));
        // None healthy at priority 0: all to priority 1.
        assert_eq!(priority_load(&[(0, 2), (2, 2)]), (vec![0, 100], 100));
    }

    #[test]
    fn low_total_health_is_normalized() {
        // 1 of 4 and 1 of 4: health 35 + 35 = 70; each gets half.
        let (load, total) = priority_load(&[(1, 4), (1, 4)]);
        assert_eq!(load, vec![50, 100]);
        assert_eq!(total, 70);
        assert_eq!(priority_load(&[(0, 4)]), (vec![100], 0));
    }
}
