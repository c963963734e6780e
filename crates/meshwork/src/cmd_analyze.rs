//! `meshwork analyze`: load, validate and analyze Istio configuration files
//! the way `istioctl analyze` does, print the findings, and exit non-zero
//! (79, istioctl's code) when any is an error. Without `-f` it analyzes
//! the running local mesh's configuration (found through its state file),
//! like `istioctl analyze` against the live cluster, else the current
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use meshwork_config::analyze::{Format, analyze_paths, render};
use meshwork_local::state::{self, State};

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
    /// Without -f: the running local mesh to analyze (needed when several run).
    #[arg(long = "mesh", value_name = "NAME", conflicts_with = "filename")]
    pub mesh: Option<String>,
    /// Where local meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    pub state_root: PathBuf,
}

/// What to analyze when no `-f` is given: the running mesh's watched
/// directories (the user's manifests, and explicit mode's generated
/// Sidecars), else the current directory. Says which on stderr.
fn default_paths(root: &Path, mesh: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let running = State::all(root);
    if running.is_empty() && mesh.is_none() {
        eprintln!("no local mesh is running: analyzing the current directory");
        return Ok(vec![PathBuf::from(".")]);
    }
    let (dir, s) = meshwork_local::ops::target::mesh(root, mesh).map_err(anyhow::Error::msg)?;
    let mut paths = vec![s.config_dir.clone()];
    let generated = meshwork_local::up_explicit::generated_dir(&dir);
    if s.mode == "explicit" && generated.is_dir() {
        paths.push(generated);
    }
    eprintln!(
        "analyzing the configuration of the running mesh {:?}: {}",
        s.name,
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(paths)
}

/// Run the analysis and print its findings; returns the exit code (0 when
/// clean or only warnings/info, 79 when there is an error).
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<i32> {
    let format: Format = args.output.parse().map_err(anyhow::Error::msg)?;
    let paths = if args.filename.is_empty() {
        default_paths(&args.state_root, args.mesh.as_deref())?
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
            mesh: None,
            state_root: dir.join("no-state"),
        };
        assert_eq!(run(&args(&good)).unwrap(), 0);
        assert_eq!(run(&args(&bad)).unwrap(), 79);
        // Without -f: the running mesh's directory (from its state file).
        let root = dir.join("state");
        State {
            name: "m".into(),
            mode: "netns".into(),
            config_dir: bad.clone(),
            ..State::default()
        }
        .save(&root.join("m"))
        .unwrap();
        assert_eq!(
            default_paths(&root, None).unwrap(),
            std::slice::from_ref(&bad),
            "the running mesh's config"
        );
        let mut running = args(&good);
        running.filename.clear();
        running.state_root = root.clone();
        assert_eq!(
            run(&running).unwrap(),
            79,
            "analyzed the mesh's (bad) config"
        );
        assert!(default_paths(&root, Some("other")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshwork-analyze-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
