//! The include check: refuse, before clang runs, any preprocessor or
//! assembler construct in an untrusted scheduler source that could make the
//! compiler read a file other than the bundled BPF headers.
//!
//! clang reads files for more than `#include`: `#include_next`, `#import`,
//! `#embed`, `__has_include` (an existence probe whose answer ends up in the
//! object), computed includes (`#include MACRO`, whose target the source can
//! assemble from pieces), `#pragma GCC dependency` (stats any path), and the
//! integrated assembler's `.incbin` / `.include` inside inline `asm`. The
//! object clang produces is shipped back to the caller, so any of these
//! would leak host files. This module lexes the source the way clang's
//! preprocessor does — line splices (also `\` + spaces + newline, also in
//! the middle of a directive name), comments before and inside directives,
//! string and character literals, digraphs (`%:include`) — and checks:
//!
//! - **directives** against an allowlist: `#include` only of a literal
//!   `<...>` or `"..."` header name that is one of the bundled headers
//!   (relative path, no `..`); conditionals, `#define`/`#undef`,
//!   `#error`/`#warning`, `#ident`; `#pragma` only from [`PRAGMAS_ALLOWED`];
//!   everything else (`#line` and `# 12 "file"` markers, `#embed`, ...) is
//!   refused. Directives in `#if 0` blocks are checked too: conditions are
//!   not evaluated (that would need the macros, which is clang's job).
//! - **tokens everywhere** (also in macro bodies and `#if` expressions):
//!   `__has_include`, `__has_include_next`, `__has_embed`, `__pragma`,
//!   `_Pragma` unless its operand is a literal allowed pragma, the
//!   identifier `incbin` and `.include` (stringified into an asm string),
//!   raw string literals and universal character names (both defeat a
//!   simple lexer), non-ASCII and control characters outside comments and
//!   literals (clang treats Unicode spaces as whitespace, so one before
//!   `#` would hide a directive from a byte-oriented check);
//! - **string literals** (runs of adjacent ones, with escapes decoded, so
//!   `".inc" "\x62in"` is seen as `.incbin`): the assembler directives that
//!   read files (`.incbin`, `.include`) or could spell them (`.macro`,
//!   `.irp`, `.altmacro`).
//!
//! What it cannot see: token pasting and stringification build new tokens
//! after this check (`CAT(_Pra, gma)(...)`, `XSTR(.CAT(inc, bin))`). That is
//! why the compiler also runs inside [`crate::bpf::jail`], whose file
//! system view holds only `/usr`, the header bundle and the source: this
//! check turns the common tricks into precise refusals, the sandbox makes
//! the uncommon ones harmless. It assumes the flags `bpf::compile` passes
//! (C in clang's default GNU mode: no trigraphs, no `-fms-extensions`).

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Pragmas a scheduler may use (first one or two words).
///
/// Pragmas matter because several change what the compiler reads or what
/// later checks see: `#pragma GCC dependency "path"` stats an arbitrary
/// host file; `#pragma GCC system_header` / `clang system_header` silence
/// every warning after it; `push_macro` / `pop_macro`, `GCC poison` and
/// `redefine_extname` change what names mean behind a lexical check's back;
/// `clang __debug` crashes or dumps compiler state on purpose;
/// `comment(...)`, `clang section` and `clang attribute` put strings or
/// attributes into the object unseen. Loop hints and include guards are all
/// a scheduler needs.
pub const PRAGMAS_ALLOWED: &[&str] = &[
    "once",
    "unroll",
    "nounroll",
    "unroll_and_jam",
    "nounroll_and_jam",
    "clang loop",
    "GCC unroll",
];

/// Directives allowed besides `#include` and `#pragma` (checked separately).
const DIRECTIVES_ALLOWED: &[&str] = &[
    "define", "undef", "if", "ifdef", "ifndef", "elif", "elifdef", "elifndef", "else", "endif",
    "error", "warning", "ident",
];

/// Case-insensitive substrings refused in string literals: assembler
/// directives that read files, or assembler macros that could spell them.
const ASM_FORBIDDEN: &[(&str, &str)] = &[
    (
        "incbin",
        "the assembler directive .incbin reads a file into the object",
    ),
    (".include", "the assembler directive .include reads a file"),
    (".macro", "assembler macros can spell .incbin from pieces"),
    (
        ".altmacro",
        "assembler macros can spell .incbin from pieces",
    ),
    (".irp", "assembler macros can spell .incbin from pieces"),
];

/// At most this many violations are reported (the first ones).
pub const MAX_VIOLATIONS: usize = 50;

/// One refused construct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// 1-based line of the source file.
    pub line: u32,
    /// 1-based column, in bytes, like clang's.
    pub column: u32,
    /// The offending text, normalised (splices and comments removed).
    pub text: String,
    /// Why it is refused and what is allowed instead.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: refused `{}`: {}",
            self.line, self.column, self.text, self.reason
        )
    }
}

/// The header names a source may include: every file of the bundle,
/// relative to each include root clang gets (so both `vmlinux/vmlinux.h`
/// and `vmlinux.h`).
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    headers: BTreeSet<String>,
}

impl Allowlist {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(headers: I) -> Allowlist {
        Allowlist {
            headers: headers.into_iter().map(Into::into).collect(),
        }
    }

    /// Every regular file under each root, by its path relative to that root.
    pub fn from_roots(roots: &[PathBuf]) -> io::Result<Allowlist> {
        let mut headers = BTreeSet::new();
        for root in roots {
            collect(root, root, &mut headers)?;
        }
        Ok(Allowlist { headers })
    }

    pub fn contains(&self, header: &str) -> bool {
        self.headers.contains(header)
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(String::as_str)
    }

    /// A few well-known entries for messages.
    fn examples(&self) -> String {
        let known = ["scx/common.bpf.h", "bpf/bpf_helpers.h", "vmlinux.h"];
        let mut ex: Vec<&str> = known.into_iter().filter(|h| self.contains(h)).collect();
        if ex.is_empty() {
            ex = self.iter().take(3).collect();
        }
        let list: Vec<String> = ex.iter().map(|h| format!("<{h}>")).collect();
        format!("{}; {} headers in all", list.join(", "), self.len())
    }
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            collect(root, &path, out)?;
        } else if ty.is_file() {
            if let Some(rel) = path.strip_prefix(root).ok().and_then(|p| p.to_str()) {
                out.insert(rel.to_string());
            }
        }
    }
    Ok(())
}

/// Check `source`; an empty result means clang may see it.
pub fn check(source: &str, allow: &Allowlist) -> Vec<Violation> {
    let text = Spliced::new(source);
    let lexed = lex(&text.bytes);
    let mut c = Checker {
        text: &text,
        allow,
        out: Vec::new(),
        pass_start: 0,
    };
    for &(at, what) in &lexed.bad_chars {
        c.bad_char(at, what);
    }
    c.next_pass();
    for line in lexed.toks.split(|t| t.kind == Kind::Newline) {
        c.line(line);
    }
    c.next_pass();
    c.tokens(&lexed.toks);
    c.next_pass();
    c.strings(&lexed.toks);
    let mut out = c.out;
    out.sort_by_key(|v| (v.line, v.column));
    out.dedup();
    out.truncate(MAX_VIOLATIONS);
    out
}

/// The source after translation phase 2 (line splices removed, newlines
/// normalised), each byte remembering where it was.
struct Spliced {
    bytes: Vec<u8>,
    at: Vec<(u32, u32)>,
    /// Position just past the end.
    end: (u32, u32),
}

impl Spliced {
    fn new(src: &str) -> Spliced {
        let s = src.as_bytes();
        let mut bytes = Vec::with_capacity(s.len());
        let mut at = Vec::with_capacity(s.len());
        let (mut line, mut col) = (1u32, 1u32);
        let mut i = 0;
        // clang skips a UTF-8 byte order mark at the start of a file.
        if s.starts_with(b"\xEF\xBB\xBF") {
            i = 3;
            col = 4;
        }
        while i < s.len() {
            let c = s[i];
            if c == b'\\' {
                // clang splices a backslash followed by horizontal space and
                // a newline too (with a warning).
                let mut j = i + 1;
                while j < s.len() && matches!(s[j], b' ' | b'\t' | 0x0b | 0x0c) {
                    j += 1;
                }
                if j < s.len() && matches!(s[j], b'\n' | b'\r') {
                    j += if s[j] == b'\r' && s.get(j + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    i = j;
                    line += 1;
                    col = 1;
                    continue;
                }
            }
            if c == b'\r' || c == b'\n' {
                bytes.push(b'\n');
                at.push((line, col));
                i += if c == b'\r' && s.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                line += 1;
                col = 1;
                continue;
            }
            bytes.push(c);
            at.push((line, col));
            col += 1;
            i += 1;
        }
        Spliced {
            bytes,
            at,
            end: (line, col),
        }
    }

    fn pos(&self, i: usize) -> (u32, u32) {
        self.at.get(i).copied().unwrap_or(self.end)
    }

    fn text(&self, t: &Tok) -> String {
        String::from_utf8_lossy(&self.bytes[t.start..t.end]).into_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    /// String literal, possibly with an encoding prefix.
    Str,
    Char,
    Punct,
    /// `<...>` after `#include`-like directive names.
    Header,
    Newline,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
    /// Whitespace or a comment precedes it.
    space_before: bool,
    /// An identifier containing `\u` / `\U`.
    ucn: bool,
    /// A raw string literal (`R"x(...)x"`).
    raw: bool,
}

struct Lexed {
    toks: Vec<Tok>,
    /// Characters outside comments and literals clang might treat unlike us.
    bad_chars: Vec<(usize, &'static str)>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$'
}

fn is_ident_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// Directive names after which clang lexes `<...>` as one header name.
fn takes_header(name: &[u8]) -> bool {
    matches!(
        name,
        b"include" | b"include_next" | b"import" | b"embed" | b"__include_macros"
    )
}

/// Translation phase 3 over spliced text: preprocessing tokens, comments
/// as whitespace, newlines kept (except inside block comments).
fn lex(b: &[u8]) -> Lexed {
    let n = b.len();
    let mut toks: Vec<Tok> = Vec::new();
    let mut bad_chars = Vec::new();
    let mut i = 0;
    // 0: inside a line; 1: only `#` so far on this line; 2: after an
    // include-like directive name (expect a header name); 3: line start.
    let mut state = 3u8;
    while i < n {
        let mut space = false;
        loop {
            if i >= n {
                break;
            }
            match b[i] {
                b' ' | b'\t' | 0x0b | 0x0c => {
                    space = true;
                    i += 1;
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    space = true;
                    i = match find(b, i + 2, b"*/") {
                        Some(j) => j + 2,
                        None => n,
                    };
                }
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    space = true;
                    while i < n && b[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => break,
            }
        }
        if i >= n {
            break;
        }
        let start = i;
        let c = b[i];
        let mut tok = Tok {
            kind: Kind::Punct,
            start,
            end: start + 1,
            space_before: space,
            ucn: false,
            raw: false,
        };
        if c == b'\n' {
            tok.kind = Kind::Newline;
            toks.push(tok);
            i += 1;
            state = 3;
            continue;
        }
        if state == 2 && c == b'<' {
            let mut j = i + 1;
            while j < n && b[j] != b'>' && b[j] != b'\n' {
                j += 1;
            }
            if j < n && b[j] == b'>' {
                j += 1;
            }
            tok.kind = Kind::Header;
            tok.end = j;
            toks.push(tok);
            i = j;
            state = 0;
            continue;
        }
        if is_ident_start(c) || (c == b'\\' && matches!(b.get(i + 1), Some(b'u' | b'U'))) {
            let mut j = i;
            while j < n {
                if is_ident_cont(b[j]) {
                    j += 1;
                } else if b[j] == b'\\' && matches!(b.get(j + 1), Some(b'u' | b'U')) {
                    tok.ucn = true;
                    j += 2;
                } else {
                    break;
                }
            }
            let word = &b[i..j];
            let quote = b.get(j).copied();
            if matches!(quote, Some(b'"' | b'\''))
                && matches!(word, b"L" | b"u" | b"U" | b"u8")
                && !tok.ucn
            {
                j = lex_quoted(b, j);
                tok.kind = if quote == Some(b'"') {
                    Kind::Str
                } else {
                    Kind::Char
                };
            } else if quote == Some(b'"') && matches!(word, b"R" | b"LR" | b"uR" | b"UR" | b"u8R") {
                j = lex_raw(b, j);
                tok.kind = Kind::Str;
                tok.raw = true;
            } else {
                tok.kind = Kind::Ident;
            }
            tok.end = j;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let mut j = i + 1;
            // pp-number: digits, letters, `_`, `.`, and a sign after an exponent.
            while j < n
                && (is_ident_cont(b[j])
                    || b[j] == b'.'
                    || (matches!(b[j], b'+' | b'-')
                        && matches!(b[j - 1], b'e' | b'E' | b'p' | b'P')))
            {
                j += 1;
            }
            tok.kind = Kind::Number;
            tok.end = j;
        } else if c == b'"' || c == b'\'' {
            tok.kind = if c == b'"' { Kind::Str } else { Kind::Char };
            tok.end = lex_quoted(b, i);
        } else if c == b'#' {
            tok.end = if b.get(i + 1) == Some(&b'#') {
                i + 2
            } else {
                i + 1
            };
        } else if c == b'%' && b.get(i + 1) == Some(&b':') {
            tok.end = if b.get(i + 2..i + 4) == Some(b"%:") {
                i + 4
            } else {
                i + 2
            };
        } else if c >= 0x80 {
            // One UTF-8 character: refused (see the module documentation).
            let mut j = i + 1;
            while j < n && (b[j] & 0xC0) == 0x80 {
                j += 1;
            }
            bad_chars.push((i, "non-ASCII character"));
            tok.end = j;
        } else if c < 0x20 || c == 0x7f {
            bad_chars.push((i, "control character"));
        }
        i = tok.end;
        let is_hash = tok.kind == Kind::Punct && matches!(&b[tok.start..tok.end], b"#" | b"%:");
        state = match state {
            3 if is_hash => 1,
            1 if tok.kind == Kind::Ident && takes_header(&b[tok.start..tok.end]) => 2,
            _ => 0,
        };
        toks.push(tok);
    }
    Lexed { toks, bad_chars }
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

/// End of a `"..."` / `'...'` literal starting at the quote `b[q]`; an
/// unterminated one ends at the newline, like clang's.
fn lex_quoted(b: &[u8], q: usize) -> usize {
    let quote = b[q];
    let mut j = q + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'\n' => return j,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// End of a raw string literal whose `"` is at `b[q]`.
fn lex_raw(b: &[u8], q: usize) -> usize {
    let mut j = q + 1;
    while j < b.len() && j - q <= 17 && !matches!(b[j], b'(' | b')' | b'\\' | b'"' | b' ' | b'\n') {
        j += 1;
    }
    if b.get(j) != Some(&b'(') {
        return lex_quoted(b, q);
    }
    let mut close = vec![b')'];
    close.extend_from_slice(&b[q + 1..j]);
    close.push(b'"');
    find(b, j + 1, &close).map_or(b.len(), |k| k + close.len())
}

struct Checker<'a> {
    text: &'a Spliced,
    allow: &'a Allowlist,
    out: Vec<Violation>,
    /// Where the current pass's violations start in `out`.
    pass_start: usize,
}

impl Checker<'_> {
    fn refuse(&mut self, at: usize, text: String, reason: String) {
        let (line, column) = self.text.pos(at);
        let mut text = text;
        if text.chars().count() > 100 {
            text = text.chars().take(100).collect::<String>() + "…";
        }
        self.push(Violation {
            line,
            column,
            text,
            reason,
        });
    }

    /// Each pass finds violations in source order, so keeping the first
    /// [`MAX_VIOLATIONS`] of each pass keeps the first ones overall, and a
    /// hostile source cannot make the list (or the work) grow without bound.
    fn push(&mut self, v: Violation) {
        if self.out.len() - self.pass_start < MAX_VIOLATIONS {
            self.out.push(v);
        }
    }

    fn next_pass(&mut self) {
        self.pass_start = self.out.len();
    }

    fn bad_char(&mut self, at: usize, what: &str) {
        let (line, column) = self.text.pos(at);
        // At most one UTF-8 character (4 bytes); decoding the whole tail per
        // character would be quadratic.
        let b = &self.text.bytes[at..(at + 4).min(self.text.bytes.len())];
        let valid = match std::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        };
        let shown = valid
            .chars()
            .next()
            .map(|c| c.escape_unicode().to_string())
            .unwrap_or_default();
        self.push(Violation {
            line,
            column,
            text: shown,
            reason: format!(
                "{what} outside comments and string literals is not allowed: \
                 clang may read it as whitespace and see a directive this check would miss; \
                 use plain ASCII in code"
            ),
        });
    }

    /// Tokens rendered on one line, whitespace and comments (and line
    /// breaks, for runs of string literals) as single spaces.
    fn render(&self, toks: &[Tok]) -> String {
        let mut s = String::new();
        let mut space = false;
        for t in toks {
            if t.kind == Kind::Newline {
                space = true;
                continue;
            }
            if !s.is_empty() && (space || t.space_before) {
                s.push(' ');
            }
            space = false;
            s.push_str(&self.text.text(t));
        }
        s
    }

    fn line(&mut self, line: &[Tok]) {
        let Some(first) = line.first() else { return };
        let t = |k: usize| -> Option<String> { line.get(k).map(|t| self.text.text(t)) };
        if first.kind != Kind::Punct || !matches!(t(0).as_deref(), Some("#" | "%:")) {
            return;
        }
        let Some(name_tok) = line.get(1) else {
            return; // the null directive
        };
        let shown = self.render(line);
        let name = t(1).unwrap_or_default();
        let at = first.start;
        match (name_tok.kind, name.as_str()) {
            (Kind::Number, _) => self.refuse(
                at,
                shown,
                "line markers (# NUMBER \"file\") are not allowed: they rename the file and \
                 renumber lines in diagnostics, and can mark the source as a system header"
                    .into(),
            ),
            (Kind::Ident, "include") => self.include(line, shown),
            (Kind::Ident, "include_next") => self.refuse(
                at,
                shown,
                format!(
                    "#include_next is not allowed: it searches the include path past the \
                     bundle; use #include of a bundled header ({})",
                    self.allow.examples()
                ),
            ),
            (Kind::Ident, "import") => self.refuse(
                at,
                shown,
                format!(
                    "#import is not allowed; use #include of a bundled header ({})",
                    self.allow.examples()
                ),
            ),
            (Kind::Ident, "embed") => self.refuse(
                at,
                shown,
                "#embed is not allowed: it copies a file's bytes into the object; \
                 no file but the bundled headers may be read"
                    .into(),
            ),
            (Kind::Ident, "line") => self.refuse(
                at,
                shown,
                "#line is not allowed: it renames the file and renumbers lines in diagnostics"
                    .into(),
            ),
            (Kind::Ident, "pragma") => {
                if let Some(reason) = pragma_refusal(&self.words(&line[2..])) {
                    self.refuse(at, shown, reason);
                }
            }
            (Kind::Ident, n) if DIRECTIVES_ALLOWED.contains(&n) => {}
            _ => self.refuse(
                at,
                shown,
                format!(
                    "#{name} is not an allowed directive; allowed: #include of a bundled header, \
                     #pragma ({}), #{}",
                    PRAGMAS_ALLOWED.join(", "),
                    DIRECTIVES_ALLOWED.join(", #")
                ),
            ),
        }
    }

    /// `#include` must name a bundled header literally.
    fn include(&mut self, line: &[Tok], shown: String) {
        let at = line[0].start;
        let Some(h) = line.get(2) else {
            return self.refuse(
                at,
                shown,
                "#include without a header name is not allowed".into(),
            );
        };
        let spelled = self.text.text(h);
        let name = match h.kind {
            Kind::Header if spelled.len() >= 2 && spelled.ends_with('>') => {
                &spelled[1..spelled.len() - 1]
            }
            Kind::Str
                if !h.raw
                    && spelled.len() >= 2
                    && spelled.starts_with('"')
                    && spelled.ends_with('"') =>
            {
                &spelled[1..spelled.len() - 1]
            }
            Kind::Header | Kind::Str => return self.refuse(
                at,
                shown,
                "malformed header name; write #include <scx/common.bpf.h> or \"scx/common.bpf.h\""
                    .into(),
            ),
            _ => {
                return self.refuse(
                    at,
                    shown,
                    format!(
                        "computed includes (#include MACRO) are not allowed: the header name \
                         must be written literally, as one of the bundled headers ({})",
                        self.allow.examples()
                    ),
                )
            }
        };
        let reason = if name.starts_with('/') {
            format!(
                "absolute include paths are not allowed; include only bundled headers, by \
                 their relative names ({})",
                self.allow.examples()
            )
        } else if name.split(['/', '\\']).any(|c| c == "..") {
            format!(
                "'..' in an include path is not allowed; include only bundled headers, by \
                 their relative names ({})",
                self.allow.examples()
            )
        } else if self.allow.contains(name) {
            return;
        } else {
            format!(
                "'{name}' is not one of the bundled headers; a scheduler is one file and may \
                 include only those ({})",
                self.allow.examples()
            )
        };
        self.refuse(at, shown, reason);
    }

    fn words(&self, toks: &[Tok]) -> Vec<String> {
        toks.iter().map(|t| self.text.text(t)).collect()
    }

    /// Token rules that apply everywhere, directives included.
    fn tokens(&mut self, toks: &[Tok]) {
        for (k, t) in toks.iter().enumerate() {
            let text = self.text.text(t);
            if t.raw {
                self.refuse(
                    t.start,
                    text.clone(),
                    "raw string literals are not allowed: their contents escape line splicing \
                     and would be misread by this check; use an ordinary string"
                        .into(),
                );
                continue;
            }
            if t.kind != Kind::Ident {
                continue;
            }
            if t.ucn {
                self.refuse(
                    t.start,
                    text,
                    "universal character names (\\u, \\U) in identifiers are not allowed: they \
                     can disguise a keyword or directive"
                        .into(),
                );
                continue;
            }
            let lower = text.to_ascii_lowercase();
            if text.starts_with("__has_include") || text.starts_with("__has_embed") {
                self.refuse(
                    t.start,
                    text,
                    "__has_include / __has_include_next / __has_embed are not allowed: they \
                     probe the host file system; the bundled headers always exist, include \
                     them unconditionally"
                        .into(),
                );
            } else if text == "__pragma" {
                self.refuse(
                    t.start,
                    text,
                    format!(
                        "__pragma is not allowed; use #pragma with one of: {}",
                        PRAGMAS_ALLOWED.join(", ")
                    ),
                );
            } else if text == "_Pragma" {
                self.pragma_operator(toks, k);
            } else if lower == "incbin" {
                self.refuse(
                    t.start,
                    text,
                    "the word incbin is not allowed: stringified into inline asm it becomes \
                     the assembler directive .incbin, which reads a file into the object"
                        .into(),
                );
            } else if lower == "include"
                && !t.space_before
                && k > 0
                && toks[k - 1].kind == Kind::Punct
                && self.text.text(&toks[k - 1]) == "."
            {
                self.refuse(
                    toks[k - 1].start,
                    format!(".{text}"),
                    "the assembler directive .include is not allowed: it reads a file".into(),
                );
            }
        }
    }

    /// `_Pragma ( "string" )` with an allowed pragma inside, nothing else.
    fn pragma_operator(&mut self, toks: &[Tok], k: usize) {
        let next: Vec<&Tok> = toks[k + 1..]
            .iter()
            .filter(|t| t.kind != Kind::Newline)
            .take(3)
            .collect();
        let shown = {
            let mut v = vec![toks[k]];
            v.extend(next.iter().copied());
            self.render(&v)
        };
        let lit = match next.as_slice() {
            [open, s, close]
                if self.text.text(open) == "("
                    && s.kind == Kind::Str
                    && !s.raw
                    && self.text.text(close) == ")" =>
            {
                Some(self.text.text(s))
            }
            _ => None,
        };
        let Some(lit) = lit else {
            return self.refuse(
                toks[k].start,
                shown,
                format!(
                    "_Pragma with a computed operand is not allowed; write _Pragma(\"...\") \
                     with one of: {}",
                    PRAGMAS_ALLOWED.join(", ")
                ),
            );
        };
        // Destringize (C11 6.10.9): drop the prefix and quotes, unescape \" and \\.
        let body = lit
            .trim_start_matches(['L', 'u', 'U', '8'])
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or("")
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        let inner = Spliced::new(&body);
        let lexed = lex(&inner.bytes);
        let words: Vec<String> = lexed
            .toks
            .iter()
            .filter(|t| t.kind != Kind::Newline)
            .map(|t| inner.text(t))
            .collect();
        if let Some(reason) = pragma_refusal(&words) {
            self.refuse(toks[k].start, shown, reason);
        }
    }

    /// Runs of string literals, as the compiler will concatenate them
    /// (identifiers in between may be macros expanding to nothing or to
    /// more strings), decoded and matched against [`ASM_FORBIDDEN`].
    fn strings(&mut self, toks: &[Tok]) {
        let mut k = 0;
        while k < toks.len() {
            if toks[k].kind != Kind::Str || toks[k].raw {
                k += 1;
                continue;
            }
            let first = k;
            let mut joined = Vec::new();
            let mut last = k;
            let mut j = k;
            while j < toks.len() {
                match toks[j].kind {
                    Kind::Str if !toks[j].raw => {
                        joined.extend(decode(&self.text.bytes[toks[j].start..toks[j].end]));
                        last = j;
                    }
                    Kind::Ident | Kind::Newline => {}
                    _ => break,
                }
                j += 1;
            }
            let lower = String::from_utf8_lossy(&joined).to_ascii_lowercase();
            if let Some((pat, why)) = ASM_FORBIDDEN.iter().find(|(p, _)| lower.contains(p)) {
                let shown = self.render(&toks[first..=last]);
                self.refuse(
                    toks[first].start,
                    shown,
                    format!(
                        "string literals containing '{pat}' are not allowed: {why}; \
                         inline asm may not read files"
                    ),
                );
            }
            k = j.max(k + 1);
        }
    }
}

/// `None` when the pragma (its words) is allowed, else why not.
fn pragma_refusal(words: &[String]) -> Option<String> {
    let w = |k: usize| words.get(k).map(String::as_str).unwrap_or("");
    let allowed = match w(0) {
        "" => true, // an empty pragma is ignored
        "once" => words.len() == 1,
        "unroll" | "nounroll" | "unroll_and_jam" | "nounroll_and_jam" => true,
        "clang" => w(1) == "loop",
        "GCC" => w(1) == "unroll",
        _ => false,
    };
    if allowed {
        return None;
    }
    let head = words.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
    Some(format!(
        "#pragma {head} is not allowed (pragmas can read files, silence warnings or redefine \
         names); allowed pragmas: {}",
        PRAGMAS_ALLOWED.join(", ")
    ))
}

/// The bytes a (non-raw) string literal stands for, escapes decoded.
fn decode(lit: &[u8]) -> Vec<u8> {
    let Some(q) = lit.iter().position(|&c| c == b'"') else {
        return Vec::new();
    };
    let body = &lit[q + 1..];
    let body = body.strip_suffix(b"\"").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' || i + 1 >= body.len() {
            out.push(body[i]);
            i += 1;
            continue;
        }
        let e = body[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'e' | b'E' => out.push(27),
            b'x' => {
                let mut v: u32 = 0;
                while i < body.len() && body[i].is_ascii_hexdigit() {
                    v = v.wrapping_mul(16) + (body[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                }
                out.push(v as u8);
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut digits = 1;
                while digits < 3 && i < body.len() && (b'0'..=b'7').contains(&body[i]) {
                    v = v * 8 + u32::from(body[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(v as u8);
            }
            b'u' | b'U' => {
                let len = if e == b'u' { 4 } else { 8 };
                let hex = body
                    .get(i..i + len)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                {
                    Some(c) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += len;
                    }
                    None => out.push(e),
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Allowlist {
        Allowlist::new([
            "scx/common.bpf.h",
            "bpf/bpf_helpers.h",
            "vmlinux.h",
            "vmlinux/vmlinux.h",
            "asm-generic/errno.h",
        ])
    }

    fn refused(src: &str) -> Vec<Violation> {
        let v = check(src, &allow());
        assert!(!v.is_empty(), "expected a refusal for:\n{src}");
        v
    }

    fn ok(src: &str) {
        let v = check(src, &allow());
        assert!(v.is_empty(), "unexpected refusal for:\n{src}\n{v:#?}");
    }

    fn reason(src: &str) -> String {
        refused(src)
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn ordinary_scheduler_passes() {
        ok(r##"/* SPDX */
#include <scx/common.bpf.h>
#include "bpf/bpf_helpers.h"
#include <vmlinux.h>
#pragma once
char _license[] SEC("license") = "GPL";
#define FIFO_DSQ 0
#define STR(x) #x
#define CAT(a, b) a ## b
const volatile u64 slice_us = 5000; // µs, in a comment is fine
static int f(int n) {
	int s = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) s += i;
#pragma clang loop unroll(disable)
	for (int i = 0; i < n; i++) s += i;
	_Pragma("unroll") for (int i = 0; i < 2; i++) s++;
	bpf_printk("include </etc/passwd> in a string is just text: %s", "µ");
	asm volatile("" ::: "memory");
	return s + '#' + sizeof("#include </etc/shadow>");
}
#if 0
#endif
#ifdef X
#elif defined(Y)
#else
#endif
#undef X
#error nothing here
"##);
    }

    #[test]
    fn forbidden_and_absolute_and_dotdot_includes() {
        let v = refused("#include <stdio.h>\n");
        assert_eq!((v[0].line, v[0].column), (1, 1));
        assert_eq!(v[0].text, "#include <stdio.h>");
        assert!(
            v[0].reason
                .contains("'stdio.h' is not one of the bundled headers")
                && v[0].reason.contains("<scx/common.bpf.h>"),
            "{}",
            v[0]
        );
        assert!(reason("int x;\n  #include \"/etc/passwd\"\n").contains("2:3: refused"));
        assert!(reason("#include </etc/passwd>\n").contains("absolute include paths"));
        assert!(reason("#include \"../../etc/passwd\"\n").contains("'..'"));
        assert!(reason("#include <scx/../scx/common.bpf.h>\n").contains("'..'"));
        assert!(reason("#include <scx/./common.bpf.h>\n").contains("not one of the bundled"));
        assert!(reason("#include\n").contains("without a header name"));
    }

    #[test]
    fn obfuscated_include_directives() {
        // Splice inside the directive name.
        let v = refused("#\\\ninclude </etc/passwd>\n");
        assert_eq!(v[0].text, "#include </etc/passwd>");
        assert!(v[0].reason.contains("absolute"));
        // Backslash, spaces, newline: clang splices that too.
        refused("#  \\   \ninc\\\nlude \"/etc/passwd\"\n");
        // Comments around the hash.
        let v = refused("/*x*/#/*y*/include </etc/passwd>\n");
        assert_eq!((v[0].line, v[0].column), (1, 6));
        // A comment spanning lines before the directive.
        refused("/* a\n b */ # include <stdio.h>\n");
        // Digraph.
        let v = refused("%:include <stdio.h>\n");
        assert_eq!(v[0].text, "%:include <stdio.h>");
        // CRLF and lone CR line ends.
        refused("int a;\r\n#include </etc/passwd>\r\n");
        refused("int a;\r#include </etc/passwd>\r");
        // Byte order mark.
        refused("\u{feff}#include </etc/passwd>\n");
        // Unicode space before the hash (clang reads it as whitespace).
        let v = refused("\u{a0}#include <scx/common.bpf.h>\n");
        assert!(v[0].reason.contains("non-ASCII"), "{v:?}");
        // In a skipped block: still refused.
        refused("#if 0\n#include </etc/passwd>\n#endif\n");
        // The splice is found after the line position is counted right.
        let v = refused("int a;\nint b; \\\n\n#include <x.h>\n");
        assert_eq!(v[0].line, 4);
    }

    #[test]
    fn text_that_only_looks_like_a_directive_passes() {
        ok("// #include </etc/passwd>\n");
        ok("/* \n#include </etc/passwd>\n */\n");
        ok("const char *s = \"#include </etc/passwd>\";\n");
        ok("int a; // comment \\\n#include </etc/passwd>\n");
        ok("char c = '#'; int b = 1 # 2;\n");
    }

    #[test]
    fn computed_includes_next_import_embed() {
        assert!(reason("#define H </etc/passwd>\n#include H\n").contains("computed includes"));
        assert!(reason("#include_next <scx/common.bpf.h>\n").contains("#include_next"));
        assert!(reason("#import <scx/common.bpf.h>\n").contains("#import"));
        assert!(reason("const char d[] = {\n#embed \"/etc/passwd\"\n};\n").contains("#embed"));
        assert!(reason("#__include_macros \"/etc/x\"\n").contains("not an allowed directive"));
        assert!(reason("#assert machine(x)\n").contains("not an allowed directive"));
    }

    #[test]
    fn has_include_anywhere() {
        let r = reason("#if __has_include(</etc/shadow>)\nint x;\n#endif\n");
        assert!(r.contains("probe the host file system"), "{r}");
        refused("#define P __has_include_next(<x>)\n");
        refused("#if __has_embed(\"/etc/passwd\")\n#endif\n");
        refused("int x = __has_include__(<a>);\n");
    }

    #[test]
    fn pragmas_outside_the_allowlist() {
        for p in [
            "GCC system_header",
            "clang system_header",
            "GCC dependency \"/etc/shadow\"",
            "push_macro(\"X\")",
            "GCC poison foo",
            "clang __debug crash",
            "comment(lib, \"x\")",
            "clang diagnostic ignored \"-Wall\"",
            "once extra",
        ] {
            let r = reason(&format!("#pragma {p}\n"));
            assert!(r.contains("allowed pragmas: once, unroll"), "{p}: {r}");
        }
        ok("#pragma GCC unroll 4\n#pragma nounroll\n#pragma\n");
        // The operator forms.
        assert!(reason("_Pragma(\"GCC system_header\")\n").contains("#pragma GCC system_header"));
        refused("_Pragma(\"GCC dependency \\\"/etc/passwd\\\"\")\n");
        ok("_Pragma(\"clang loop unroll(enable)\") int x;\n");
        ok("#define U _Pragma(\"unroll\")\n");
        assert!(reason("#define P(x) _Pragma(#x)\n").contains("computed operand"));
        assert!(reason("__pragma(once)\n").contains("__pragma"));
        let v = refused("#\\\npragma GCC system_header\n");
        assert_eq!(v[0].text, "#pragma GCC system_header");
    }

    #[test]
    fn line_directives_and_markers() {
        assert!(reason("#line 1 \"/etc/passwd\"\n").contains("#line"));
        assert!(reason("# 1 \"x.h\" 3\n").contains("line markers"));
    }

    #[test]
    fn assembler_file_reads() {
        let r = reason("asm(\".incbin \\\"/etc/passwd\\\"\");\n");
        assert!(r.contains("'incbin'"), "{r}");
        refused("asm(\".INCBIN \\\"/etc/passwd\\\"\");\n");
        refused("asm(\".include \\\"/etc/passwd\\\"\");\n");
        // Split over adjacent literals, lines and empty macros.
        let v = refused("asm(\".inc\"\n\"bin \\\"/etc/passwd\\\"\");\n");
        assert_eq!(v[0].text, "\".inc\" \"bin \\\"/etc/passwd\\\"\"");
        refused("#define E\nasm(\".inc\" E \"bin x\");\n");
        // Escapes.
        refused("asm(\".\\x69ncbin x\");\n");
        refused("asm(\".\\151ncbin x\");\n");
        refused("asm(\".\\u0069ncbin x\");\n");
        // Assembler macros that could build it.
        refused("asm(\".macro m a\\n.inc\\\\a x\\n.endm\\nm bin\");\n");
        // Stringified.
        refused("#define S(x) #x\nasm(S(.incbin \"/etc/passwd\"));\n");
        refused("#define S(x) #x\nasm(S(.include \"/etc/passwd\"));\n");
    }

    #[test]
    fn lexer_escapes_are_refused() {
        assert!(
            reason("const char *s = R\"x(\n#include </etc/passwd>\n)x\";\n").contains("raw string")
        );
        assert!(reason("#\\u0069nclude </etc/passwd>\n").contains("universal character"));
        assert!(reason("int a;\u{1}#include <scx/common.bpf.h>\n").contains("control character"));
    }

    #[test]
    fn positions_count_bytes_and_spliced_lines() {
        let v = refused("int a;\n/* é */  #pragma GCC system_header\n");
        assert_eq!((v[0].line, v[0].column), (2, 11));
        let v = refused("int a = \\\n 1; asm(\"x\" \\\n \".incbin y\");\n");
        assert_eq!((v[0].line, v[0].column), (2, 9));
    }

    #[test]
    fn at_most_max_violations() {
        let src = "#include <a.h>\n".repeat(200);
        assert_eq!(check(&src, &allow()).len(), MAX_VIOLATIONS);
    }

    #[test]
    fn allowlist_from_directories() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("scx")).unwrap();
        std::fs::create_dir_all(d.path().join("vmlinux")).unwrap();
        std::fs::write(d.path().join("scx/common.bpf.h"), "").unwrap();
        std::fs::write(d.path().join("vmlinux/vmlinux.h"), "").unwrap();
        let a = Allowlist::from_roots(&[d.path().to_path_buf(), d.path().join("vmlinux")]).unwrap();
        let all: Vec<&str> = a.iter().collect();
        assert_eq!(all, ["scx/common.bpf.h", "vmlinux.h", "vmlinux/vmlinux.h"]);
    }
}
