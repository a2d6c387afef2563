//! Finding the external programs a benchmark runs.

use std::path::PathBuf;

use crate::error::Error;

/// `program` on `$PATH` or in the sbin directories (which a non-login root
/// shell may not have on its path), or a setup error naming the Debian
/// package that ships it.
pub fn find(program: &str, package: &str) -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    let paths = std::env::join_paths(dirs).unwrap_or_default();
    crate::host::which_in(program, &paths).ok_or_else(|| {
        Error::Setup(format!(
            "{program} not found: install Debian's {package} package \
             (apt-get install -y {package})"
        ))
    })
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
