//! File names as clients send them: the rules a name must pass before it reaches a backend.
//! Pure functions on the name alone; routing and pool globs build on them.

/// Longest filename accepted (bytes); longer requests are refused, never forwarded.
pub const MAX_FILENAME: usize = 255;

/// Names that never reach a backend: empty, too long, with NUL, or with a `..` component
/// (either slash). A leading `/` is fine: many configs ask for `/pxelinux.0`.
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty filename");
    }
    if name.len() > MAX_FILENAME {
        return Err("filename longer than 255 bytes");
    }
    if name.contains('\0') {
        return Err("filename contains NUL");
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err("filename must not contain '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_checked() {
        assert!(check_filename("/pxelinux.0").is_ok());
        assert!(check_filename("pxelinux.cfg/01-aa-bb").is_ok());
        assert!(check_filename("a/../b").is_err());
        assert!(check_filename("..\\x").is_err());
        assert!(check_filename("..").is_err());
        assert!(check_filename("a..b").is_ok(), "only whole components");
        assert!(check_filename(&"x".repeat(256)).is_err());
        assert!(check_filename("").is_err());
    }
}
