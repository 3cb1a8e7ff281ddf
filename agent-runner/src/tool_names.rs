//! The names under which the model sees tools. The built-in server's tools keep their plain
//! names (`read_file`); a user server's tools are `mcp__<server>__<tool>`, made to fit the
//! function-name rule of OpenAI-compatible APIs (`^[A-Za-z0-9_-]{1,64}$`). Pure; the routing
//! from these names back to a server and its own tool name is `mcp.rs`'s.

use std::collections::HashSet;

/// The longest function name OpenAI-compatible APIs accept.
pub const MAX_TOOL_NAME: usize = 64;
/// Hex digits of the hash that makes a shortened or colliding name unique.
const HASH_DIGITS: usize = 8;

/// Replaces every character outside `[A-Za-z0-9_-]` with `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Hands out unique names: the first tool to want a name gets it; a later one that would collide
/// with it, or any name longer than [`MAX_TOOL_NAME`], gets a shortened form with a hash of the
/// original server and tool names. Given the same servers in the same order the result is the
/// same, so a conversation's stored tool calls keep their meaning across runner restarts.
#[derive(Debug, Default)]
pub struct ToolNamer {
    taken: HashSet<String>,
}

impl ToolNamer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A built-in tool's name, as is. `None` if it is taken already (the duplicate is dropped).
    pub fn plain(&mut self, tool: &str) -> Option<String> {
        self.taken.insert(tool.to_owned()).then(|| tool.to_owned())
    }

    /// `mcp__<server>__<tool>`, sanitised, at most [`MAX_TOOL_NAME`] characters, unique.
    pub fn prefixed(&mut self, server: &str, tool: &str) -> String {
        let wanted = format!("mcp__{}__{}", sanitize(server), sanitize(tool));
        if wanted.len() <= MAX_TOOL_NAME && self.taken.insert(wanted.clone()) {
            return wanted;
        }
        // `wanted` is ASCII, so byte length is character length and any cut is a boundary.
        let keep = MAX_TOOL_NAME - 1 - HASH_DIGITS;
        let stem = &wanted[..wanted.len().min(keep)];
        let mut salt = 0u32;
        loop {
            let hash = fnv1a(&[
                server.as_bytes(),
                &[0],
                tool.as_bytes(),
                &salt.to_le_bytes(),
            ]);
            let name = format!("{stem}_{:0width$x}", hash >> 32, width = HASH_DIGITS);
            if self.taken.insert(name.clone()) {
                return name;
            }
            // Two originals with the same stem and the same 32-bit hash: try the next salt.
            salt += 1;
        }
    }
}

/// FNV-1a, 64 bits: tiny, and stable across Rust releases (unlike `DefaultHasher`), which the
/// names' stability needs.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether `name` is acceptable as a function name as it is.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn plain_prefixed_and_sanitised_names() {
        let mut namer = ToolNamer::new();
        assert_eq!(namer.plain("read_file").as_deref(), Some("read_file"));
        assert_eq!(namer.plain("read_file"), None);
        let table = [
            ("time", "get_current_time", "mcp__time__get_current_time"),
            ("my.server", "do it!", "mcp__my_server__do_it_"),
            (
                "wetter-dienst",
                "vorhersage",
                "mcp__wetter-dienst__vorhersage",
            ),
            ("ü", "é", "mcp______"),
        ];
        for (server, tool, want) in table {
            let name = namer.prefixed(server, tool);
            assert_eq!(name, want, "{server}/{tool}");
            assert!(is_valid(&name), "{name}");
        }
    }

    #[test]
    fn collisions_and_long_names_get_a_hash_suffix() {
        let mut namer = ToolNamer::new();
        let first = namer.prefixed("a.b", "t");
        let second = namer.prefixed("a_b", "t");
        assert_eq!(first, "mcp__a_b__t");
        assert!(second.starts_with("mcp__a_b__t_"), "{second}");
        assert_eq!(second.len(), "mcp__a_b__t_".len() + HASH_DIGITS);
        assert_ne!(first, second);

        let long_tool = "x".repeat(100);
        let long = namer.prefixed("server", &long_tool);
        assert_eq!(long.len(), MAX_TOOL_NAME);
        assert!(long.starts_with("mcp__server__xxxx"), "{long}");
        assert!(is_valid(&long), "{long}");
        // Two long names that share the first 55 characters still differ.
        let other = namer.prefixed("server", &format!("{long_tool}y"));
        assert_eq!(other.len(), MAX_TOOL_NAME);
        assert_ne!(long, other);
        // The same original asked for again (a duplicate tool in one server) gets a new name.
        let again = namer.prefixed("server", &long_tool);
        assert!(!([&long, &other].contains(&&again)), "{again}");
        assert!(is_valid(&again));
    }

    #[test]
    fn names_are_deterministic() {
        let names = || {
            let mut namer = ToolNamer::new();
            vec![
                namer.prefixed("a.b", "t"),
                namer.prefixed("a_b", "t"),
                namer.prefixed("s", &"y".repeat(80)),
            ]
        };
        assert_eq!(names(), names());
        // Pinned: a change here renames tools in stored conversations.
        assert_eq!(names()[1], "mcp__a_b__t_748b7ba5");
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c, "FNV-1a test vector");
    }
}
