//! GameLift-compatible search expressions over game sessions: `filter_expression` (operands,
//! comparators, AND / OR / NOT, parentheses) and `sort_expression` (`<operand> ASC|DESC`).
//!
//! ```text
//! filter     := or
//! or         := and ( OR and )*
//! and        := unary ( AND unary )*
//! unary      := NOT unary | '(' or ')' | comparison
//! comparison := operand comparator value
//! comparator := = | <> | != | < | > | <= | >=
//! value      := 'string' | number | true | false
//! ```
//!
//! Keywords, operand names and booleans are case-insensitive; strings are single-quoted, with
//! `''` for a quote inside. Operands: `gameSessionName`, `gameSessionId`,
//! `gameSessionProperties.<key>` (labels; the key is case-sensitive), `maximumSessions`,
//! `creationTimeMillis`, `playerSessionCount`, `hasAvailablePlayerSessions`,
//! `availablePlayerSessions`. Strings and booleans compare with `=` and `<>` only; numbers with
//! every comparator. A property compared with a number is compared numerically (a value that is
//! not a number matches nothing); a game session without the property matches no comparison on
//! it. Every error names its 1-based character position.

use std::{cmp::Ordering, fmt, sync::Arc};

use super::{CreationPolicy, Error, GameSession, Result};

/// Longest accepted expression, in characters (GameLift's limit).
pub const EXPRESSION_MAX: usize = 1024;
/// Deepest nesting of NOT and parentheses.
const DEPTH_MAX: usize = 32;

/// What a comparison or a sort looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operand {
    GameSessionName,
    GameSessionId,
    /// `gameSessionProperties.<key>`: a label of the game session.
    Property(String),
    MaximumSessions,
    CreationTimeMillis,
    PlayerSessionCount,
    HasAvailablePlayerSessions,
    AvailablePlayerSessions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Bool,
    /// A property: a string, or a number when compared with one.
    Property,
}

impl Operand {
    const NAMES: [(&'static str, Operand); 7] = [
        ("gameSessionName", Operand::GameSessionName),
        ("gameSessionId", Operand::GameSessionId),
        ("maximumSessions", Operand::MaximumSessions),
        ("creationTimeMillis", Operand::CreationTimeMillis),
        ("playerSessionCount", Operand::PlayerSessionCount),
        (
            "hasAvailablePlayerSessions",
            Operand::HasAvailablePlayerSessions,
        ),
        ("availablePlayerSessions", Operand::AvailablePlayerSessions),
    ];
    const PROPERTIES: &'static str = "gameSessionProperties";

    fn parse(word: &str) -> Option<Operand> {
        if let Some((head, key)) = word.split_once('.') {
            return (head.eq_ignore_ascii_case(Self::PROPERTIES) && !key.is_empty())
                .then(|| Operand::Property(key.to_string()));
        }
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(word))
            .map(|(_, o)| o.clone())
    }

    fn kind(&self) -> Kind {
        match self {
            Operand::GameSessionName | Operand::GameSessionId => Kind::Str,
            Operand::Property(_) => Kind::Property,
            Operand::HasAvailablePlayerSessions => Kind::Bool,
            Operand::MaximumSessions
            | Operand::CreationTimeMillis
            | Operand::PlayerSessionCount
            | Operand::AvailablePlayerSessions => Kind::Num,
        }
    }

    /// The operand's value in `g`, for sorting.
    pub fn sort_value(&self, g: &GameSession) -> SortValue {
        match self {
            Operand::GameSessionName => SortValue::Str(g.name.to_string()),
            Operand::GameSessionId => SortValue::Str(g.id().as_str().to_string()),
            Operand::Property(k) => match g.labels.get(k) {
                None => SortValue::Missing,
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() => SortValue::Num(n),
                    _ => SortValue::Str(v.clone()),
                },
            },
            Operand::HasAvailablePlayerSessions => {
                SortValue::Num(f64::from(u8::from(available_seats(g) > 0)))
            }
            _ => SortValue::Num(self.number(g).unwrap_or_default()),
        }
    }

    fn number(&self, g: &GameSession) -> Option<f64> {
        Some(match self {
            Operand::MaximumSessions => f64::from(g.maximum_player_session_count),
            Operand::CreationTimeMillis => g.creation_time.as_micros().div_euclid(1000) as f64,
            Operand::PlayerSessionCount => f64::from(g.current_player_session_count),
            Operand::AvailablePlayerSessions => f64::from(available_seats(g)),
            Operand::Property(k) => g.labels.get(k)?.trim().parse::<f64>().ok()?,
            _ => return None,
        })
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Property(k) => write!(f, "{}.{k}", Self::PROPERTIES),
            o => {
                let name = Self::NAMES
                    .iter()
                    .find(|(_, x)| x == o)
                    .map_or("?", |(n, _)| n);
                f.write_str(name)
            }
        }
    }
}

/// Seats a new player could take now: free seats of an ACTIVE, ACCEPT_ALL game session, else 0.
pub fn available_seats(g: &GameSession) -> u32 {
    if g.is_active() && g.creation_policy == CreationPolicy::AcceptAll {
        g.free_seats()
    } else {
        0
    }
}

/// The value an operand sorts by. Order: numbers, then strings, then missing properties.
#[derive(Debug, Clone)]
pub enum SortValue {
    Num(f64),
    Str(String),
    Missing,
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            SortValue::Num(_) => 0,
            SortValue::Str(_) => 1,
            SortValue::Missing => 2,
        }
    }
}

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SortValue::Num(a), SortValue::Num(b)) => a.total_cmp(b),
            (SortValue::Str(a), SortValue::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for SortValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SortValue {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparator {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Comparator {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Comparator::Eq => o == Ordering::Equal,
            Comparator::Ne => o != Ordering::Equal,
            Comparator::Lt => o == Ordering::Less,
            Comparator::Gt => o == Ordering::Greater,
            Comparator::Le => o != Ordering::Greater,
            Comparator::Ge => o != Ordering::Less,
        }
    }
    fn is_equality(self) -> bool {
        matches!(self, Comparator::Eq | Comparator::Ne)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(Arc<str>),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Compare(Operand, Comparator, Value),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    fn matches(&self, g: &GameSession) -> bool {
        match self {
            Expr::And(a, b) => a.matches(g) && b.matches(g),
            Expr::Or(a, b) => a.matches(g) || b.matches(g),
            Expr::Not(a) => !a.matches(g),
            Expr::Compare(op, cmp, value) => compare(op, *cmp, value, g),
        }
    }
}

fn compare(op: &Operand, cmp: Comparator, value: &Value, g: &GameSession) -> bool {
    match (op, value) {
        (Operand::GameSessionName, Value::Str(s)) => cmp.holds((*g.name).cmp(s)),
        (Operand::GameSessionId, Value::Str(s)) => cmp.holds(g.id().as_str().cmp(s)),
        (Operand::Property(k), Value::Str(s)) => g
            .labels
            .get(k)
            .is_some_and(|v| cmp.holds(v.as_str().cmp(s))),
        (Operand::HasAvailablePlayerSessions, Value::Bool(b)) => {
            cmp.holds((available_seats(g) > 0).cmp(b))
        }
        (op, Value::Num(n)) => op.number(g).is_some_and(|x| cmp.holds(x.total_cmp(n))),
        // Ruled out by the type check at parse time.
        _ => false,
    }
}

/// A parsed `filter_expression`. The empty expression matches every game session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    expr: Option<Expr>,
}

impl Filter {
    /// Parses and type-checks `text`; errors name `field` and the position of the problem.
    pub fn parse(field: &str, text: &str) -> Result<Filter> {
        check_length(field, text)?;
        let tokens = lex(text).map_err(|e| e.into_error(field))?;
        if tokens.is_empty() {
            return Ok(Filter::default());
        }
        let mut p = Parser {
            tokens,
            at: 0,
            end: text.chars().count() + 1,
        };
        let expr = p.or(0).map_err(|e| e.into_error(field))?;
        if let Some(t) = p.peek() {
            let msg = match &t.tok {
                Tok::RParen => "unbalanced ')'".to_string(),
                other => format!("expected AND, OR or the end, found {other}"),
            };
            return Err(ParseError::at(t.pos, msg).into_error(field));
        }
        Ok(Filter { expr: Some(expr) })
    }

    /// Whether `g` satisfies the expression.
    pub fn matches(&self, g: &GameSession) -> bool {
        self.expr.as_ref().is_none_or(|e| e.matches(g))
    }

    /// True for the empty expression.
    pub fn is_empty(&self) -> bool {
        self.expr.is_none()
    }
}

/// A parsed `sort_expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub operand: Operand,
    pub descending: bool,
}

impl Default for Sort {
    /// Creation time, oldest first (then game session id): the order of stable paging.
    fn default() -> Self {
        Sort {
            operand: Operand::CreationTimeMillis,
            descending: false,
        }
    }
}

impl Sort {
    /// Parses `<operand> [ASC|DESC]` (ASC when omitted); empty = [`Sort::default`].
    pub fn parse(field: &str, text: &str) -> Result<Sort> {
        check_length(field, text)?;
        let tokens = lex(text).map_err(|e| e.into_error(field))?;
        let mut it = tokens.into_iter();
        let Some(first) = it.next() else {
            return Ok(Sort::default());
        };
        let operand = match &first.tok {
            Tok::Word(w) => Operand::parse(w).ok_or_else(|| unknown_operand(first.pos, w)),
            other => Err(ParseError::at(
                first.pos,
                format!("expected an operand, found {other}"),
            )),
        }
        .map_err(|e| e.into_error(field))?;
        let descending = match it.next() {
            None => false,
            Some(t) => match &t.tok {
                Tok::Word(w) if w.eq_ignore_ascii_case("ASC") => false,
                Tok::Word(w) if w.eq_ignore_ascii_case("DESC") => true,
                other => {
                    return Err(ParseError::at(
                        t.pos,
                        format!("expected ASC or DESC, found {other}"),
                    )
                    .into_error(field))
                }
            },
        };
        if let Some(t) = it.next() {
            return Err(
                ParseError::at(t.pos, format!("expected the end, found {}", t.tok))
                    .into_error(field),
            );
        }
        Ok(Sort {
            operand,
            descending,
        })
    }
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.descending { "DESC" } else { "ASC" };
        write!(f, "{} {dir}", self.operand)
    }
}

fn check_length(field: &str, text: &str) -> Result<()> {
    let n = text.chars().count();
    if n > EXPRESSION_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {EXPRESSION_MAX} characters, got {n}"),
        ));
    }
    Ok(())
}

// ----- lexer -----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(Arc<str>),
    Num(f64, String),
    Cmp(Comparator, &'static str),
    LParen,
    RParen,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "'{w}'"),
            Tok::Str(s) => write!(f, "the string '{s}'"),
            Tok::Num(_, text) => write!(f, "the number {text}"),
            Tok::Cmp(_, s) => write!(f, "'{s}'"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character position.
    pos: usize,
}

#[derive(Debug)]
struct ParseError {
    pos: usize,
    msg: String,
}

impl ParseError {
    fn at(pos: usize, msg: impl Into<String>) -> Self {
        ParseError {
            pos,
            msg: msg.into(),
        }
    }
    fn into_error(self, field: &str) -> Error {
        Error::invalid(field, format!("at position {}: {}", self.pos, self.msg))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/')
}

fn lex(text: &str) -> std::result::Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let cmp = match two.as_str() {
            "<>" => Some((Comparator::Ne, "<>", 2)),
            "!=" => Some((Comparator::Ne, "!=", 2)),
            "<=" => Some((Comparator::Le, "<=", 2)),
            ">=" => Some((Comparator::Ge, ">=", 2)),
            _ => match c {
                '=' => Some((Comparator::Eq, "=", 1)),
                '<' => Some((Comparator::Lt, "<", 1)),
                '>' => Some((Comparator::Gt, ">", 1)),
                _ => None,
            },
        };
        if let Some((cmp, s, n)) = cmp {
            out.push(Token {
                tok: Tok::Cmp(cmp, s),
                pos,
            });
            i += n;
            continue;
        }
        match c {
            '(' => {
                out.push(Token {
                    tok: Tok::LParen,
                    pos,
                });
                i += 1;
            }
            ')' => {
                out.push(Token {
                    tok: Tok::RParen,
                    pos,
                });
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(ParseError::at(pos, "unterminated string")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Str(s.into()),
                    pos,
                });
            }
            '"' => {
                return Err(ParseError::at(
                    pos,
                    "strings are single-quoted ('like this')",
                ))
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if chars.get(i).is_some_and(|c| is_word_char(*c)) {
                    return Err(ParseError::at(
                        i + 1,
                        format!("unexpected character {:?} in a number", chars[i]),
                    ));
                }
                let n = text
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| ParseError::at(pos, format!("{text} is not a number")))?;
                out.push(Token {
                    tok: Tok::Num(n, text),
                    pos,
                });
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    pos,
                });
            }
            other => {
                return Err(ParseError::at(
                    pos,
                    format!("unexpected character {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

// ----- parser ----------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Position just past the end of the text (for "unexpected end" errors).
    end: usize,
}

fn is_keyword(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
}

fn unknown_operand(pos: usize, w: &str) -> ParseError {
    ParseError::at(
        pos,
        format!(
            "unknown operand '{w}' (expected gameSessionName, gameSessionId, \
             gameSessionProperties.<key>, maximumSessions, creationTimeMillis, \
             playerSessionCount, hasAvailablePlayerSessions or availablePlayerSessions)"
        ),
    )
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self, expected: &str) -> std::result::Result<Token, ParseError> {
        let t = self.tokens.get(self.at).cloned().ok_or_else(|| {
            ParseError::at(self.end, format!("expected {expected}, found the end"))
        })?;
        self.at += 1;
        Ok(t)
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| is_keyword(&t.tok, kw)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> std::result::Result<Expr, ParseError> {
        let mut left = self.and(depth)?;
        while self.eat_keyword("OR") {
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> std::result::Result<Expr, ParseError> {
        let mut left = self.unary(depth)?;
        while self.eat_keyword("AND") {
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> std::result::Result<Expr, ParseError> {
        let t = self.next("a comparison, NOT or '('")?;
        if depth >= DEPTH_MAX && (is_keyword(&t.tok, "NOT") || t.tok == Tok::LParen) {
            return Err(ParseError::at(
                t.pos,
                format!("nested more than {DEPTH_MAX} levels deep"),
            ));
        }
        if is_keyword(&t.tok, "NOT") {
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        match t.tok {
            Tok::LParen => {
                let inner = self.or(depth + 1)?;
                let close = self.next("')'")?;
                if close.tok != Tok::RParen {
                    return Err(ParseError::at(
                        close.pos,
                        format!(
                            "expected ')' to close the '(' at position {}, found {}",
                            t.pos, close.tok
                        ),
                    ));
                }
                Ok(inner)
            }
            Tok::Word(ref w) if ["AND", "OR"].iter().any(|k| w.eq_ignore_ascii_case(k)) => Err(
                ParseError::at(t.pos, format!("expected a comparison, found {}", t.tok)),
            ),
            Tok::Word(w) => self.comparison(t.pos, &w),
            other => Err(ParseError::at(
                t.pos,
                format!("expected a comparison, NOT or '(', found {other}"),
            )),
        }
    }

    fn comparison(&mut self, pos: usize, word: &str) -> std::result::Result<Expr, ParseError> {
        let operand = Operand::parse(word).ok_or_else(|| unknown_operand(pos, word))?;
        let c = self.next("a comparator (= <> < > <= >=)")?;
        let (cmp, cmp_text) = match c.tok {
            Tok::Cmp(cmp, s) => (cmp, s),
            other => {
                return Err(ParseError::at(
                    c.pos,
                    format!(
                        "expected a comparator (= <> < > <= >=) after {operand}, found {other}"
                    ),
                ))
            }
        };
        let v = self.next("a value")?;
        let value = match v.tok {
            Tok::Str(s) => Value::Str(s),
            Tok::Num(n, _) => Value::Num(n),
            Tok::Word(ref w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Tok::Word(ref w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Tok::Word(ref w) => {
                return Err(ParseError::at(
                    v.pos,
                    format!("expected a value ('string', number, true or false), found '{w}' (strings are single-quoted)"),
                ))
            }
            other => {
                return Err(ParseError::at(
                    v.pos,
                    format!("expected a value ('string', number, true or false), found {other}"),
                ))
            }
        };
        let ok = match (operand.kind(), &value) {
            (Kind::Str, Value::Str(_)) | (Kind::Bool, Value::Bool(_)) => {
                if !cmp.is_equality() {
                    return Err(ParseError::at(
                        c.pos,
                        format!("{operand} can only be compared with = or <>, not {cmp_text}"),
                    ));
                }
                true
            }
            (Kind::Property, Value::Str(_)) => {
                if !cmp.is_equality() {
                    return Err(ParseError::at(
                        c.pos,
                        format!(
                            "a string can only be compared with = or <>, not {cmp_text} \
                             (compare with a number for a numeric comparison)"
                        ),
                    ));
                }
                true
            }
            (Kind::Num | Kind::Property, Value::Num(_)) => true,
            _ => false,
        };
        if !ok {
            let want = match operand.kind() {
                Kind::Str => "a 'string'",
                Kind::Num => "a number",
                Kind::Bool => "true or false",
                Kind::Property => "a 'string' or a number",
            };
            return Err(ParseError::at(
                v.pos,
                format!("{operand} compares with {want}, found {}", describe(&value)),
            ));
        }
        Ok(Expr::Compare(operand, cmp, value))
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("the string '{s}'"),
        Value::Num(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{FleetId, GameSessionId, GameSessionInfo, GameSessionStatus, Timestamp};

    fn game(name: &str, max: u32, current: u32, labels: &[(&str, &str)]) -> GameSession {
        GameSession {
            info: Arc::new(GameSessionInfo {
                id: GameSessionId::parse(
                    "id",
                    &format!(
                        "gs-{}",
                        name.replace(|c: char| !c.is_ascii_alphanumeric(), "")
                    ),
                )
                .unwrap(),
                fleet_id: FleetId::parse("f", "fleet").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            name: name.into(),
            maximum_player_session_count: max,
            current_player_session_count: current,
            creation_policy: CreationPolicy::AcceptAll,
            status: GameSessionStatus::Active,
            labels: Arc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            release: "1.0".into(),
            environment: "prod".into(),
            reservation_timeout: std::time::Duration::from_secs(60),
            heartbeat_timeout: None,
            heartbeat_deadline: None,
            creation_time: Timestamp::from_micros(1_700_000_000_123_456),
            termination_time: None,
            termination_reason: None,
            end_cause: None,
        }
    }

    fn matches(expr: &str, g: &GameSession) -> bool {
        Filter::parse("filter_expression", expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(g)
    }

    fn error(expr: &str) -> String {
        match Filter::parse("filter_expression", expr) {
            Ok(f) => panic!("{expr} parsed as {f:?}"),
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "filter_expression");
                reason
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_operand_and_comparator() {
        let g = game("arena", 10, 4, &[("mode", "ctf"), ("level", "12")]);
        for (expr, want) in [
            ("gameSessionName = 'arena'", true),
            ("gameSessionName <> 'arena'", false),
            ("gameSessionName != 'x'", true),
            ("gameSessionId = 'gs-arena'", true),
            ("gameSessionProperties.mode = 'ctf'", true),
            ("gameSessionProperties.mode <> 'ctf'", false),
            ("gameSessionProperties.missing = 'x'", false),
            ("gameSessionProperties.missing <> 'x'", false),
            ("NOT gameSessionProperties.missing = 'x'", true),
            ("gameSessionProperties.level > 9", true),
            ("gameSessionProperties.level >= 12", true),
            ("gameSessionProperties.level < 12", false),
            ("gameSessionProperties.mode > 1", false),
            ("maximumSessions = 10", true),
            ("maximumSessions <> 10", false),
            ("maximumSessions < 11", true),
            ("maximumSessions > 10", false),
            ("maximumSessions <= 10", true),
            ("maximumSessions >= 11", false),
            ("playerSessionCount = 4", true),
            ("availablePlayerSessions = 6", true),
            ("availablePlayerSessions >= 7", false),
            ("hasAvailablePlayerSessions = true", true),
            ("hasAvailablePlayerSessions <> TRUE", false),
            ("creationTimeMillis = 1700000000123", true),
            ("creationTimeMillis > 1700000000123", false),
            ("creationTimeMillis >= -5", true),
            ("maximumSessions = 10.0", true),
        ] {
            assert_eq!(matches(expr, &g), want, "{expr}");
        }
        let full = game("full", 4, 4, &[]);
        assert!(matches("hasAvailablePlayerSessions = false", &full));
        let mut deny = game("deny", 10, 0, &[]);
        deny.creation_policy = CreationPolicy::DenyAll;
        assert!(matches(
            "availablePlayerSessions = 0 AND hasAvailablePlayerSessions = false",
            &deny
        ));
    }

    #[test]
    fn precedence_not_then_and_then_or() {
        let g = game("a", 10, 0, &[]);
        // OR binds looser than AND: true OR (false AND false).
        assert!(matches(
            "maximumSessions = 10 OR maximumSessions = 1 AND maximumSessions = 2",
            &g
        ));
        // Parentheses override: (true OR false) AND false.
        assert!(!matches(
            "(maximumSessions = 10 OR maximumSessions = 1) AND maximumSessions = 2",
            &g
        ));
        // NOT binds tighter than AND: (NOT false) AND true.
        assert!(matches(
            "NOT maximumSessions = 1 AND maximumSessions = 10",
            &g
        ));
        assert!(!matches(
            "NOT (maximumSessions = 10 AND maximumSessions = 10)",
            &g
        ));
        assert!(matches("NOT NOT maximumSessions = 10", &g));
        assert!(matches("  ((( maximumSessions=10 )))  ", &g));
        // Keywords and operands are case-insensitive.
        assert!(matches(
            "maximumsessions = 10 and not MAXIMUMSESSIONS = 1",
            &g
        ));
        // GameLift's documented example.
        assert!(matches(
            "maximumSessions>=10 AND hasAvailablePlayerSessions=true",
            &g
        ));
    }

    #[test]
    fn quoting() {
        let g = game("it's", 10, 0, &[("map", "de dust, 2 (night)")]);
        assert!(matches("gameSessionName = 'it''s'", &g));
        assert!(matches(
            "gameSessionProperties.map = 'de dust, 2 (night)'",
            &g
        ));
        assert!(matches(
            "gameSessionName = 'IT''S' OR gameSessionName = 'it''s'",
            &g
        ));
        assert!(
            !matches("gameSessionName = 'IT''S'", &g),
            "strings are case-sensitive"
        );
        assert!(matches("gameSessionProperties.map <> ''", &g));
    }

    #[test]
    fn empty_matches_everything() {
        let f = Filter::parse("filter_expression", "   ").unwrap();
        assert!(f.is_empty());
        assert!(f.matches(&game("a", 1, 1, &[])));
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("maximumSessions >", "at position 18: expected a value"),
            (
                "maximumSessions = 'ten'",
                "at position 19: maximumSessions compares with a number",
            ),
            (
                "gameSessionName > 'a'",
                "at position 17: gameSessionName can only be compared with = or <>",
            ),
            ("hasAvailablePlayerSessions < true", "at position 28:"),
            (
                "hasAvailablePlayerSessions = 1",
                "at position 30: hasAvailablePlayerSessions compares with true or false",
            ),
            (
                "gameSessionProperties.mode >= 'a'",
                "at position 28: a string can only be compared",
            ),
            ("gameSessionProperties.mode = true", "at position 30:"),
            ("colour = 'red'", "at position 1: unknown operand 'colour'"),
            (
                "gameSessionProperties. = 'x'",
                "at position 1: unknown operand",
            ),
            (
                "maximumSessions = 1 AND",
                "at position 24: expected a comparison, NOT or '(', found the end",
            ),
            (
                "maximumSessions = 1 maximumSessions = 2",
                "at position 21: expected AND, OR or the end",
            ),
            ("(maximumSessions = 1", "at position 21: expected ')'"),
            ("maximumSessions = 1)", "at position 20: unbalanced ')'"),
            (
                "gameSessionName = 'open",
                "at position 19: unterminated string",
            ),
            (
                "gameSessionName = \"x\"",
                "at position 19: strings are single-quoted",
            ),
            ("maximumSessions == 1", "at position 18: expected a value"),
            (
                "maximumSessions = 1 & x",
                "at position 21: unexpected character '&'",
            ),
            (
                "AND maximumSessions = 1",
                "at position 1: expected a comparison",
            ),
            (
                "maximumSessions = 12ab",
                "at position 21: unexpected character 'a' in a number",
            ),
            (
                "maximumSessions = 1.2.3",
                "at position 19: 1.2.3 is not a number",
            ),
            (
                "gameSessionName = arena",
                "at position 19: expected a value",
            ),
            ("maximumSessions 1", "at position 17: expected a comparator"),
            ("()", "at position 2: expected a comparison"),
        ];
        for (expr, want) in cases {
            let got = error(expr);
            assert!(got.starts_with(want), "{expr}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn limits_length_and_depth() {
        let long = format!("gameSessionName = '{}'", "x".repeat(EXPRESSION_MAX));
        assert!(error(&long).contains("at most 1024 characters"));
        let deep = format!("{}maximumSessions = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(error(&deep).contains("nested more than"));
        let nots = format!("{}maximumSessions = 1", "NOT ".repeat(40));
        assert!(error(&nots).contains("nested more than"));
        // Many ANDs are not nesting: fine.
        let wide = vec!["maximumSessions = 1"; 40].join(" AND ");
        assert!(Filter::parse("f", &wide).is_ok());
    }

    #[test]
    fn sort_expressions() {
        assert_eq!(Sort::parse("s", "").unwrap(), Sort::default());
        let s = Sort::parse("s", "playerSessionCount DESC").unwrap();
        assert_eq!(s.operand, Operand::PlayerSessionCount);
        assert!(s.descending);
        assert!(!Sort::parse("s", "maximumSessions asc").unwrap().descending);
        assert!(!Sort::parse("s", "maximumSessions").unwrap().descending);
        assert_eq!(
            Sort::parse("s", "gameSessionProperties.level DESC")
                .unwrap()
                .operand,
            Operand::Property("level".into())
        );
        for (bad, want) in [
            ("colour ASC", "at position 1: unknown operand"),
            ("maximumSessions UP", "at position 17: expected ASC or DESC"),
            ("maximumSessions ASC x", "at position 21: expected the end"),
            ("'x' ASC", "at position 1: expected an operand"),
        ] {
            match Sort::parse("sort_expression", bad) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "sort_expression");
                    assert!(reason.starts_with(want), "{bad}: {reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(s.to_string(), "playerSessionCount DESC");
    }

    #[test]
    fn sort_values_order_numbers_strings_missing() {
        let a = game("a", 10, 0, &[("level", "9")]);
        let b = game("b", 10, 0, &[("level", "10")]);
        let c = game("c", 10, 0, &[("level", "pro")]);
        let d = game("d", 10, 0, &[]);
        let op = Operand::Property("level".into());
        let mut v: Vec<_> = [&d, &c, &b, &a]
            .iter()
            .map(|g| (op.sort_value(g), g.name.to_string()))
            .collect();
        v.sort();
        let names: Vec<_> = v.into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
