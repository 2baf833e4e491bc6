//! The words of the waiting page, in every language the edge speaks, in one catalog: a
//! [`Strings`] per language, each a struct with a field per message, so that a message missing in
//! one language fails the build rather than showing a blank. The language is the best of the
//! visitor's `Accept-Language` the catalog has (English otherwise).
//!
//! Why not Fluent or gettext: they bring a parser and plural rules into a Worker whose size is
//! budgeted, for a page of fifteen sentences; numbers here are digits and durations units
//! (`3 min 20 s`) that read the same in both languages.
//!
//! To add a language: a `Strings` constant, its entry in [`CATALOG`], and a test below.

/// One language's messages. `{name}`, `{percent}`, `{secs}` are filled in by [`fill`].
#[derive(Debug)]
pub struct Strings {
    /// The language's tag, for `<html lang>` and `Content-Language`.
    pub code: &'static str,
    /// The page's title: `{name}` is the event's.
    pub title: &'static str,
    pub heading: &'static str,
    pub sold_out: &'static str,
    pub closed: &'static str,
    pub joined_early: &'static str,
    pub sales_start_in: &'static str,
    pub paused: &'static str,
    pub keep_place: &'static str,
    pub your_place: &'static str,
    pub estimated_wait: &'static str,
    pub progress: &'static str,
    /// The progress bar read aloud: `{percent}`.
    pub progress_text: &'static str,
    /// A place not known yet.
    pub place_unknown: &'static str,
    /// A wait too short to tell.
    pub wait_unknown: &'static str,
    /// `{secs}`: how often the page updates.
    pub updates_itself: &'static str,
}

pub const EN: Strings = Strings {
    code: "en",
    title: "In line: {name}",
    heading: "You are in line for {name}",
    sold_out: "Sorry: this event has sold out.",
    closed: "The line for this event has been closed.",
    joined_early: "You have joined before the start. Your place will be drawn at random when sales start.",
    sales_start_in: "Sales start in",
    paused: "Admission is paused for a moment.",
    keep_place: "You keep your place.",
    your_place: "Your place in line",
    estimated_wait: "Estimated wait",
    progress: "Progress",
    progress_text: "{percent} percent of the line ahead of you has gone in",
    place_unknown: "being worked out",
    wait_unknown: "a moment",
    updates_itself: "This page updates by itself every {secs} seconds. Keep it open; if you leave and come back soon, you keep your place.",
};

pub const DE: Strings = Strings {
    code: "de",
    title: "In der Warteschlange: {name}",
    heading: "Sie stehen in der Warteschlange für {name}",
    sold_out: "Leider ist diese Veranstaltung ausverkauft.",
    closed: "Die Warteschlange für diese Veranstaltung wurde geschlossen.",
    joined_early: "Sie sind vor dem Verkaufsstart beigetreten. Ihr Platz wird zum Verkaufsstart ausgelost.",
    sales_start_in: "Der Verkauf beginnt in",
    paused: "Der Einlass ist kurz angehalten.",
    keep_place: "Sie behalten Ihren Platz.",
    your_place: "Ihr Platz in der Warteschlange",
    estimated_wait: "Geschätzte Wartezeit",
    progress: "Fortschritt",
    progress_text: "{percent} Prozent der Warteschlange vor Ihnen sind eingelassen",
    place_unknown: "wird ermittelt",
    wait_unknown: "einen Moment",
    updates_itself: "Diese Seite aktualisiert sich alle {secs} Sekunden von selbst. Lassen Sie sie geöffnet; wenn Sie gehen und bald zurückkommen, behalten Sie Ihren Platz.",
};

/// Every language, the default first.
pub const CATALOG: [&Strings; 2] = [&EN, &DE];

/// The longest `Accept-Language` read, and the most ranges taken from it.
const MAX_HEADER: usize = 512;
const MAX_RANGES: usize = 16;

/// The catalog's best language for an `Accept-Language` header (RFC 9110 §12.5.4: ranges with
/// `q` weights; a range matches a language whose tag it is or begins, `*` any): the highest
/// weight wins, the earlier range on a tie; English when none matches or the header is absent.
pub fn negotiate(accept_language: Option<&str>) -> &'static Strings {
    let Some(header) = accept_language.filter(|h| h.len() <= MAX_HEADER) else { return &EN };
    let ranges: Vec<(String, u16)> = header
        .split(',')
        .take(MAX_RANGES)
        .map(|range| {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q=").map(str::trim))
                .map_or(Some(1000), parse_weight)
                .unwrap_or(0);
            (tag, weight)
        })
        .collect();
    let primary = |tag: &str| tag.split('-').next().unwrap_or("").to_owned();
    // `*` is any language the visitor did not name (and so did not refuse).
    let unnamed = CATALOG.into_iter().find(|s| ranges.iter().all(|(tag, _)| primary(tag) != s.code));
    let mut best: Option<(u16, &'static Strings)> = None;
    for (tag, weight) in &ranges {
        if *weight == 0 {
            continue;
        }
        let found = if tag == "*" { unnamed } else { CATALOG.into_iter().find(|s| s.code == primary(tag)) };
        if let Some(strings) = found {
            if best.is_none_or(|(w, _)| *weight > w) {
                best = Some((*weight, strings));
            }
        }
    }
    best.map_or(&EN, |(_, s)| s)
}

/// A `q` value (`0`, `0.5`, `1.000`) in thousandths; `None` when it is not one.
fn parse_weight(q: &str) -> Option<u16> {
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `template` with each `{key}` replaced by its value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_owned(), |text, (key, value)| text.replace(&format!("{{{key}}}"), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_language_the_visitor_accepts_is_chosen() {
        let code = |h: Option<&str>| negotiate(h).code;
        assert_eq!(code(None), "en");
        assert_eq!(code(Some("de-DE,de;q=0.9,en;q=0.8")), "de");
        assert_eq!(code(Some("fr-FR, de;q=0.7, en;q=0.5")), "de", "French is not in the catalog");
        assert_eq!(code(Some("en-GB;q=0.8, de;q=0.9")), "de", "by weight, not order");
        assert_eq!(code(Some("de;q=0, en")), "en", "q=0 means not acceptable");
        assert_eq!(code(Some("fr, *;q=0.1")), "en");
        assert_eq!(code(Some("en;q=0, *")), "de", "any language but the refused one");
        assert_eq!(code(Some("DE-at")), "de", "tags are case-insensitive");
        assert_eq!(code(Some("de;q=2, en;q=0.5")), "en", "a weight above 1 is not a weight");
        assert_eq!(code(Some("de;q=abc")), "en");
        assert_eq!(code(Some(&format!("{}de", "x,".repeat(300)))), "en", "an absurd header is ignored");
    }

    #[test]
    fn every_language_has_every_placeholder_of_english() {
        for strings in CATALOG {
            for (en, other) in [
                (EN.title, strings.title),
                (EN.heading, strings.heading),
                (EN.progress_text, strings.progress_text),
                (EN.updates_itself, strings.updates_itself),
            ] {
                for key in ["{name}", "{percent}", "{secs}"] {
                    assert_eq!(en.contains(key), other.contains(key), "{} {key}: {other}", strings.code);
                }
            }
        }
        assert_eq!(fill(DE.heading, &[("name", "Oper")]), "Sie stehen in der Warteschlange für Oper");
    }
}
