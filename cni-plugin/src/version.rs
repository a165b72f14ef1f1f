//! VERSION: the versions this plugin speaks.

use serde_json::{json, Value};

use crate::spec::Version;

pub fn run() -> Value {
    json!({
        "cniVersion": Version::LATEST.as_str(),
        "supportedVersions": Version::ALL.map(Version::as_str),
    })
}
