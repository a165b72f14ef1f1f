//! The `CNI_*` environment: parsed and validated before anything touches the node.

use std::path::PathBuf;

use weft_common::netconf::check_ifname;

use super::error::CniError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("{other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                ))
            }
        })
    }
}

/// The validated environment of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Present (and valid) for ADD, DEL and CHECK.
    pub container_id: String,
    /// Required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// Present (and valid) for ADD, DEL and CHECK.
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Self, CniError> {
        Self::parse(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Parses from any lookup function (tests pass a map).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(CniError::invalid_env("CNI_COMMAND", "is not set")),
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: Vec::new(),
        };
        if !per_container {
            return Ok(env);
        }
        let id = get("CNI_CONTAINERID").unwrap_or_default();
        check_container_id(&id)?;
        env.container_id = id;
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        check_ifname(&ifname).map_err(|e| CniError::invalid_env("CNI_IFNAME", e))?;
        env.ifname = ifname;
        env.netns = match get("CNI_NETNS").filter(|s| !s.is_empty()) {
            Some(p) => {
                if !p.starts_with('/') {
                    return Err(CniError::invalid_env(
                        "CNI_NETNS",
                        format!("{p:?} is not an absolute path"),
                    ));
                }
                Some(PathBuf::from(p))
            }
            None if command == Command::Del => None,
            None => {
                return Err(CniError::invalid_env(
                    "CNI_NETNS",
                    "is required for ADD and CHECK",
                ))
            }
        };
        env.args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(env)
    }

    /// The value of a `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 1024 bytes.
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    let var = "CNI_CONTAINERID";
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(CniError::invalid_env(var, "is empty or not set")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(CniError::invalid_env(
                var,
                format!("{id:?} must start with a letter or digit"),
            ))
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(CniError::invalid_env(var, format!("{id:?} contains {c:?}")));
    }
    if id.len() > 1024 {
        return Err(CniError::invalid_env(var, "is longer than 1024 bytes"));
    }
    Ok(())
}

/// `K=V;K2=V2`. Empty parts are ignored; a part without `=` is an error.
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(CniError::invalid_env(
                "CNI_ARGS",
                format!("{p:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::parse(|k| m.get(k).cloned())
    }

    fn err_msg(pairs: &[(&str, &str)]) -> String {
        let e = env(pairs).unwrap_err();
        assert_eq!(e.code, 4, "{e}");
        e.msg
    }

    const OK: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1.2_3"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    fn with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = OK
            .iter()
            .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        v.extend(over.iter().filter(|(_, val)| *val != "<unset>").copied());
        v
    }

    #[test]
    fn valid_add() {
        let e = env(&with(&[(
            "CNI_ARGS",
            "IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=a",
        )]))
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.arg("IP"), Some("10.0.0.5"));
        assert_eq!(
            e.netns.as_deref(),
            Some(std::path::Path::new("/var/run/netns/x"))
        );
    }

    #[test]
    fn command_errors_name_the_variable() {
        assert!(err_msg(&with(&[("CNI_COMMAND", "<unset>")])).contains("CNI_COMMAND"));
        assert!(err_msg(&with(&[("CNI_COMMAND", "ADDD")])).contains("CNI_COMMAND"));
    }

    #[test]
    fn container_id_rules() {
        for bad in ["", "../x", ".a", "a/b", "a b", "-a", "a:b"] {
            assert!(
                err_msg(&with(&[("CNI_CONTAINERID", bad)])).contains("CNI_CONTAINERID"),
                "{bad}"
            );
        }
        assert!(err_msg(&with(&[("CNI_CONTAINERID", "<unset>")])).contains("CNI_CONTAINERID"));
    }

    #[test]
    fn ifname_rules() {
        for bad in ["", "..", ".", "../eth0", "eth 0", "0123456789abcdef", "a:b"] {
            assert!(
                err_msg(&with(&[("CNI_IFNAME", bad)])).contains("CNI_IFNAME"),
                "{bad}"
            );
        }
    }

    #[test]
    fn netns_required_for_add_and_check_only() {
        assert!(err_msg(&with(&[("CNI_NETNS", "<unset>")])).contains("CNI_NETNS"));
        assert!(err_msg(&with(&[("CNI_NETNS", "relative/path")])).contains("CNI_NETNS"));
        assert!(
            err_msg(&with(&[("CNI_COMMAND", "CHECK"), ("CNI_NETNS", "<unset>")]))
                .contains("CNI_NETNS")
        );
        let e = env(&with(&[("CNI_COMMAND", "DEL"), ("CNI_NETNS", "<unset>")])).unwrap();
        assert_eq!(e.netns, None);
    }

    #[test]
    fn bad_args() {
        assert!(err_msg(&with(&[("CNI_ARGS", "IP")])).contains("CNI_ARGS"));
        assert!(err_msg(&with(&[("CNI_ARGS", "=x")])).contains("CNI_ARGS"));
    }

    #[test]
    fn status_gc_version_need_nothing_else() {
        for c in ["STATUS", "GC", "VERSION"] {
            assert!(env(&[("CNI_COMMAND", c)]).is_ok(), "{c}");
        }
    }
}
