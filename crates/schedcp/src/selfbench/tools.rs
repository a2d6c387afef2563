//! Finding the external programs a benchmark runs.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// `program` on `$PATH` or in the sbin directories (which a non-login root
/// shell may not have on its path), or a setup error naming the Debian
/// package that ships it.
pub fn find(program: &str, package: &str) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::Setup(format!(
                "{program} not found: install Debian's {package} package \
                 (apt-get install -y {package})"
            ))
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_standard_program_and_names_the_package_otherwise() {
        assert!(find("sh", "dash").is_ok());
        let e = find("no-such-tool-schedcp", "rt-tests").unwrap_err();
        assert!(matches!(e, Error::Setup(_)));
        assert!(e.to_string().contains("apt-get install -y rt-tests"), "{e}");
    }
}
