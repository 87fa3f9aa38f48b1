//! Text helpers shared by the parsers: untrusted input quoted in an error message is cut short,
//! so that a hostile or broken file cannot make a message of unbounded size.

/// `s` cut after `max` characters, with `…` marking the cut; `s` itself when it is not longer.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("", 0), "");
    }
}
