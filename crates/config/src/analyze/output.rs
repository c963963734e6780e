//! Rendering findings as text (like `istioctl analyze`), JSON or YAML.

use super::Report;

/// Output formats of `meshwork analyze -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per finding.
    Text,
    /// A JSON array of findings.
    Json,
    /// A YAML list of findings.
    Yaml,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "log" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            other => Err(format!(
                "unknown output format {other:?}: use text, json or yaml"
            )),
        }
    }
}

/// Render a report.
pub fn render(report: &Report, format: Format) -> Result<String, String> {
    match format {
        Format::Text => {
            if report.diagnostics.is_empty() {
                return Ok(format!(
                    "\u{2714} No validation issues found when analyzing {} resources.\n",
                    report.resources
                ));
            }
            let mut s = String::new();
            for d in &report.diagnostics {
                s.push_str(&d.to_string());
                s.push('\n');
            }
            Ok(s)
        }
        Format::Json => serde_json::to_string_pretty(&report.diagnostics)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml_ng::to_string(&report.diagnostics).map_err(|e| e.to_string()),
    }
}
