//! `meshwork analyze`: load, validate and analyze Istio configuration files
//! the way `istioctl analyze` does, print the findings, and exit non-zero
//! (79, istioctl's code) when any is an error.

use std::io::Write;
use std::path::PathBuf;

use meshwork_config::analyze::{Format, analyze_paths, render};

/// Arguments of `meshwork analyze`.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalyzeArgs {
    /// A file or directory (walked recursively) to analyze, or `-` for
    /// stdin; repeat for several. Defaults to the current directory.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filename: Vec<PathBuf>,
    /// Output format: `text`, `json` or `yaml`.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json", "yaml"])]
    pub output: String,
}

/// Run the analysis and print its findings; returns the exit code (0 when
/// clean or only warnings/info, 79 when there is an error).
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<i32> {
    let format: Format = args.output.parse().map_err(anyhow::Error::msg)?;
    let paths = if args.filename.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.filename.clone()
    };
    let report = analyze_paths(&paths);
    let text = render(&report, format).map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AnalyzeArgs,
    }

    #[test]
    fn parses_repeated_files_and_output() {
        let cli = Cli::parse_from([
            "analyze",
            "-f",
            "a.yaml",
            "--filename",
            "dir",
            "-f",
            "-",
            "-o",
            "json",
        ]);
        assert_eq!(
            cli.args.filename,
            [
                PathBuf::from("a.yaml"),
                PathBuf::from("dir"),
                PathBuf::from("-")
            ]
        );
        assert_eq!(cli.args.output, "json");
        assert!(Cli::try_parse_from(["analyze", "-o", "xml"]).is_err());
    }

    #[test]
    fn exit_codes_follow_istioctl() {
        let dir = tempfile_dir();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 80}]\n").unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: nowhere}\n").unwrap();
        let args = |f: &PathBuf| AnalyzeArgs {
            filename: vec![f.clone()],
            output: "yaml".into(),
        };
        assert_eq!(run(&args(&good)).unwrap(), 0);
        assert_eq!(run(&args(&bad)).unwrap(), 79);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshwork-analyze-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
