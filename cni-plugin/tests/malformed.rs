//! Malformed input, each answered with the right code, a JSON error on stdout and
//! nothing leaked. Runs the binary as a runtime would.

mod common;

use common::{run_raw, Net, Ns};
use serde_json::json;
use weft_common::require_root;

#[test]
fn malformed_inputs_get_the_right_codes() {
    if !require_root("malformed inputs") {
        return;
    }
    let net = Net::new(30, 24);
    let ns = Ns::new();
    let good = net.conf("1.0.0").to_string();
    let mut no_type = net.conf("1.0.0");
    no_type.as_object_mut().unwrap().remove("type");
    let no_type = no_type.to_string();
    let mut no_version = net.conf("1.0.0");
    no_version.as_object_mut().unwrap().remove("cniVersion");
    let no_version = no_version.to_string();
    let mut bad_name = net.conf("1.0.0");
    bad_name["name"] = json!("../etc");
    let bad_name = bad_name.to_string();
    let mut bad_field = net.conf("1.0.0");
    bad_field["dataDir"] = json!(5);
    let bad_field = bad_field.to_string();
    let huge = format!(
        r#"{{"cniVersion":"1.0.0","name":"x","type":"weft","pad":"{}"}}"#,
        "a".repeat(2 << 20)
    );
    let wrong_type = good.replace(r#""type":"weft""#, r#""type":"bridge""#);
    let version =
        |v: &str| good.replace(r#""cniVersion":"1.0.0""#, &format!(r#""cniVersion":"{v}""#));
    let v020 = version("0.2.0");
    let v9 = version("9.9.9");
    let p = ns.path.as_str();
    let ok_env: Vec<(&str, &str)> = vec![
        ("CNI_CONTAINERID", "mal"),
        ("CNI_NETNS", p),
        ("CNI_IFNAME", "eth0"),
    ];
    let env_with = |k: &'static str, v: Option<&'static str>| -> Vec<(&'static str, String)> {
        let mut e: Vec<(&'static str, String)> = ok_env
            .iter()
            .filter(|(n, _)| *n != k)
            .map(|(n, v)| (*n, v.to_string()))
            .collect();
        if let Some(v) = v {
            e.push((k, v.to_owned()));
        }
        e
    };

    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [u8],
        Vec<(&'static str, String)>,
        u64,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            Some("ADD"),
            b"{not json",
            env_with("", None),
            6,
            "not valid JSON",
        ),
        (
            "JSON but not an object",
            Some("ADD"),
            b"[1,2]",
            env_with("", None),
            6,
            "not a JSON object",
        ),
        (
            "empty stdin",
            Some("ADD"),
            b"",
            env_with("", None),
            6,
            "JSON",
        ),
        (
            "oversized stdin",
            Some("ADD"),
            huge.as_bytes(),
            env_with("", None),
            6,
            "larger than",
        ),
        (
            "unknown cniVersion",
            Some("ADD"),
            v9.as_bytes(),
            env_with("", None),
            1,
            "9.9.9",
        ),
        (
            "old cniVersion",
            Some("ADD"),
            v020.as_bytes(),
            env_with("", None),
            1,
            "0.2.0",
        ),
        (
            "missing cniVersion",
            Some("ADD"),
            no_version.as_bytes(),
            env_with("", None),
            7,
            "cniVersion",
        ),
        (
            "missing type",
            Some("ADD"),
            no_type.as_bytes(),
            env_with("", None),
            7,
            "type",
        ),
        (
            "wrong type",
            Some("ADD"),
            wrong_type.as_bytes(),
            env_with("", None),
            7,
            "type",
        ),
        (
            "../ in network name",
            Some("ADD"),
            bad_name.as_bytes(),
            env_with("", None),
            7,
            "name",
        ),
        (
            "field of the wrong type",
            Some("ADD"),
            bad_field.as_bytes(),
            env_with("", None),
            7,
            "invalid network config",
        ),
        (
            "missing CNI_COMMAND",
            None,
            good.as_bytes(),
            env_with("", None),
            4,
            "CNI_COMMAND",
        ),
        (
            "unknown CNI_COMMAND",
            Some("ATTACH"),
            good.as_bytes(),
            env_with("", None),
            4,
            "CNI_COMMAND",
        ),
        (
            "missing CNI_CONTAINERID",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_CONTAINERID", None),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "../ in CNI_CONTAINERID",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_CONTAINERID", Some("../../etc")),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "/ in CNI_CONTAINERID",
            Some("DEL"),
            good.as_bytes(),
            env_with("CNI_CONTAINERID", Some("a/b")),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "missing CNI_IFNAME",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_IFNAME", None),
            4,
            "CNI_IFNAME",
        ),
        (
            "../ in CNI_IFNAME",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_IFNAME", Some("../eth0")),
            4,
            "CNI_IFNAME",
        ),
        (
            "CNI_IFNAME ..",
            Some("DEL"),
            good.as_bytes(),
            env_with("CNI_IFNAME", Some("..")),
            4,
            "CNI_IFNAME",
        ),
        (
            "long CNI_IFNAME",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_IFNAME", Some("eth0123456789abc")),
            4,
            "CNI_IFNAME",
        ),
        (
            "missing CNI_NETNS on ADD",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_NETNS", None),
            4,
            "CNI_NETNS",
        ),
        (
            "missing CNI_NETNS on CHECK",
            Some("CHECK"),
            good.as_bytes(),
            env_with("CNI_NETNS", None),
            4,
            "CNI_NETNS",
        ),
        (
            "CNI_NETNS not there",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_NETNS", Some("/var/run/netns/nope-wc")),
            4,
            "CNI_NETNS",
        ),
        (
            "relative CNI_NETNS",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_NETNS", Some("netns/x")),
            4,
            "CNI_NETNS",
        ),
        (
            "bad CNI_ARGS",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_ARGS", Some("IP")),
            4,
            "CNI_ARGS",
        ),
        (
            "bad IP in CNI_ARGS",
            Some("ADD"),
            good.as_bytes(),
            env_with("CNI_ARGS", Some("IP=10.0.0.300")),
            4,
            "CNI_ARGS",
        ),
        (
            "CHECK without prevResult",
            Some("CHECK"),
            good.as_bytes(),
            env_with("", None),
            7,
            "prevResult",
        ),
        (
            "GC on 1.0.0",
            Some("GC"),
            good.as_bytes(),
            vec![],
            1,
            "1.1.0",
        ),
        (
            "STATUS on 1.0.0",
            Some("STATUS"),
            good.as_bytes(),
            vec![],
            1,
            "1.1.0",
        ),
    ];
    for (what, command, stdin, env, code, needle) in &cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = run_raw(*command, stdin, &env);
        assert_ne!(answer.code, 0, "{what}: succeeded");
        let v: serde_json::Value = serde_json::from_str(&answer.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {:?}", answer.stdout));
        assert_eq!(v["code"].as_u64(), Some(*code), "{what}: {v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} does not mention {needle:?}"
        );
        assert!(v["cniVersion"].is_string(), "{what}: {v}");
        assert!(
            !answer.stderr.contains("panicked"),
            "{what}: panicked: {}",
            answer.stderr
        );
    }
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(net.ports().is_empty());
    // VERSION needs nothing but the command.
    let v = run_raw(Some("VERSION"), b"", &[]).ok();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

/// A `subnetFile` that is not a subnet file but something huge (a log, a device) is
/// refused after a bounded read: code 105 naming the file and the limit. No root needed:
/// the subnet file is read before anything touches the kernel.
#[test]
fn an_oversized_subnet_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let subnet_file = dir.path().join("subnet.env");
    // Valid keys, then padding: parsed whole, it would be accepted.
    let text = "WEFT_NODE_CIDRS=10.199.0.0/24\nWEFT_CLUSTER_CIDRS=10.0.0.0/8\nWEFT_MTU=1400\nWEFT_BRIDGE=wcbig0\n";
    std::fs::write(&subnet_file, text.to_owned() + &"#".repeat(4 << 20)).unwrap();
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "wtbig",
        "type": "weft",
        "subnetFile": subnet_file,
        "dataDir": dir.path().join("data"),
    });
    let env = [
        ("CNI_CONTAINERID", "big"),
        ("CNI_NETNS", "/var/run/netns/wc-not-used"),
        ("CNI_IFNAME", "eth0"),
    ];
    let answer = common::run("ADD", &conf, &env);
    let msg = answer.err(105);
    assert!(
        msg.contains(&*subnet_file.to_string_lossy()) && msg.contains("65536 bytes"),
        "{msg}"
    );
    let msg = common::run("STATUS", &conf, &[]).err(50);
    assert!(msg.contains("65536 bytes"), "{msg}");
    assert!(!dir.path().join("data").exists(), "no IPAM store made");
}
