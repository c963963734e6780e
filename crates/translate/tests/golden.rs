//! Golden files: the rendered xDS of Bookinfo sidecars and of a proxyless
//! gRPC client. `UPDATE_GOLDEN=1 cargo test -p meshwork-translate --test golden`
//! rewrites them; any other difference fails.

mod common;

use std::path::PathBuf;

use meshwork_translate::generate;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected == actual {
        return;
    }
    let mut diff = String::new();
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (el, al) = (e.get(i).copied(), a.get(i).copied());
        if el != al {
            diff.push_str(&format!(
                "line {}:\n- {}\n+ {}\n",
                i + 1,
                el.unwrap_or("<none>"),
                al.unwrap_or("<none>")
            ));
            if diff.len() > 4000 {
                break;
            }
        }
    }
    panic!("{name} differs from its golden file (UPDATE_GOLDEN=1 to accept):\n{diff}");
}

#[test]
fn productpage_sidecar() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    check("productpage-sidecar.txt", &common::render::render(&g));
}

#[test]
fn reviews_v1_sidecar() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "reviews-v1"));
    check("reviews-v1-sidecar.txt", &common::render::render(&g));
}

#[test]
fn proxyless_client() {
    let (snap, _) = common::bookinfo();
    let g = generate(&snap, &common::proxyless("default"));
    check("proxyless-grpc.txt", &common::render::render(&g));
}

#[test]
fn generation_is_deterministic() {
    let (snap, instances) = common::bookinfo();
    let proxy = common::sidecar(&instances, "productpage-v1");
    assert_eq!(generate(&snap, &proxy), generate(&snap, &proxy));
}
