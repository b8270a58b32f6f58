//! `serve --config FILE`: every `serve` flag from a TOML file.
//!
//! The file's keys are the flags' long names (`addr = "0.0.0.0:50051"`, `quick-open = true`,
//! `witness = ["http://…=w1+…", "http://…=w2+…"]`, `log-format = "json"`). Before the command
//! line is parsed, [`expand`] turns each setting into the flag it names, placed right after
//! `serve`, so clap checks the values exactly as it checks typed ones. Precedence, highest
//! first: a flag on the command line, its environment variable, the file, the default. A key
//! that names no flag is an error that lists the keys there are: a typo never goes unnoticed.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::CommandFactory;

/// The command line with the settings of `serve --config FILE` put in as flags, or the
/// command line as it was when it has no such option.
pub fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // The subcommand is the first argument that is not the global `--log-format`.
    let mut at = 1;
    while let Some(a) = args.get(at).and_then(|a| a.to_str()) {
        match a {
            "--log-format" => at += 2,
            a if a.starts_with("--log-format=") => at += 1,
            _ => break,
        }
    }
    if args.get(at).is_none_or(|a| a != "serve") {
        return Ok(args);
    }
    let serve_at = at;
    let after = &args[serve_at + 1..];
    let mut file = None;
    for (i, a) in after.iter().enumerate() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            let f = after
                .get(i + 1)
                .ok_or_else(|| anyhow!("--config needs a file name"))?;
            file = Some(std::path::PathBuf::from(f));
        } else if let Some(f) = s.strip_prefix("--config=") {
            file = Some(f.into());
        }
    }
    let Some(file) = file else {
        return Ok(args);
    };
    let given: Vec<String> = after
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let settings = flags_from(&file, &given, |var| std::env::var_os(var).is_some())?;
    let mut out = args[..=serve_at].to_vec();
    out.extend(settings.into_iter().map(OsString::from));
    out.extend_from_slice(after);
    Ok(out)
}

/// The flags a config file sets (in key order): those not `given` on the command line nor set by an
/// environment variable (`env_set`).
fn flags_from(
    file: &Path,
    given: &[String],
    env_set: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the config file {}", file.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid TOML", file.display()))?;
    let cli = super::Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .ok_or_else(|| anyhow!("no serve command"))?;
    // serve's own flags and the global ones (`--log-format`).
    let known: Vec<&clap::Arg> = serve
        .get_arguments()
        .chain(cli.get_arguments().filter(|a| a.is_global_set()))
        .filter(|a| a.get_long().is_some_and(|l| l != "config" && l != "help"))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some(arg) = known.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let mut names: Vec<&str> = known.iter().filter_map(|a| a.get_long()).collect();
            names.sort_unstable();
            bail!(
                "{}: unknown setting {key:?}; the settings are serve's flags: {}",
                file.display(),
                names.join(", ")
            );
        };
        if given.iter().any(|g| g == key) {
            continue;
        }
        if arg.get_env().and_then(|v| v.to_str()).is_some_and(&env_set) {
            continue;
        }
        let flag = format!("--{key}");
        let takes_value = arg.get_action().takes_values();
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => bail!(
                    "{}: {key} = {other}: expected a string, a number or a boolean",
                    file.display()
                ),
            }
        };
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(flag);
                }
            }
            _ if !takes_value => bail!(
                "{}: {key} is a switch: write {key} = true or false",
                file.display()
            ),
            toml::Value::Array(items) => {
                for v in items {
                    out.push(format!("{flag}={}", scalar(v)?));
                }
            }
            v => out.push(format!("{flag}={}", scalar(v)?)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(toml: &str, given: &[&str], env: &[&str]) -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("claimledger.toml");
        std::fs::write(&file, toml)?;
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        flags_from(&file, &given, |v| env.contains(&v))
    }

    #[test]
    fn settings_become_flags() {
        let got = flags(
            "addr = \"0.0.0.0:1\"\nquick-open = true\nallow-plaintext = false\n\
             drain-seconds = 3\nwitness = [\"http://a=k1\", \"http://b=k2\"]\n\
             log-format = \"json\"\n",
            &[],
            &[],
        )
        .expect("a valid file");
        // In the file's key order (TOML tables are sorted); clap does not mind the order.
        assert_eq!(
            got,
            [
                "--addr=0.0.0.0:1",
                "--drain-seconds=3",
                "--log-format=json",
                "--quick-open",
                "--witness=http://a=k1",
                "--witness=http://b=k2",
            ]
        );
    }

    #[test]
    fn the_command_line_and_the_environment_win() {
        let got = flags(
            "addr = \"0.0.0.0:1\"\ndata-dir = \"/srv/x\"\n",
            &["addr"],
            &["CLAIMLEDGER_DATA_DIR"],
        )
        .expect("a valid file");
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = flags("adr = \"x\"\n", &[], &[]).expect_err("a typo");
        assert!(e.to_string().contains("unknown setting \"adr\""), "{e}");
        assert!(e.to_string().contains("addr"), "{e}");
        let e = flags("quick-open = \"yes\"\n", &[], &[]).expect_err("a string for a switch");
        assert!(e.to_string().contains("is a switch"), "{e}");
        let e = flags("addr = [\n", &[], &[]).expect_err("bad TOML");
        assert!(e.to_string().contains("not valid TOML"), "{e}");
        let e = flags("addr = { a = 1 }\n", &[], &[]).expect_err("a table");
        assert!(e.to_string().contains("expected a string"), "{e}");
    }
}
