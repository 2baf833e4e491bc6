//! Printed tickets: one A4 page a ticket, with the event, the place, the order and the ticket's QR
//! code (its signed code, as on the buyer's page). The QR code is drawn as vector squares (sharp at
//! any printer's resolution); the text is in Helvetica, one of the fonts every PDF reader has, so
//! nothing is embedded and a page is a few kilobytes. Helvetica without an embedded font shows
//! Latin-1 only (WinAnsiEncoding): other characters print as `?` (the code itself is ASCII).

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use uuid::Uuid;

use crate::error::Result;
use crate::models::ticket::qr;

/// What a printed ticket says.
#[derive(Debug, Clone)]
pub struct PrintedTicket {
    pub title: String,
    pub venue: String,
    /// When, in the event's time zone, as the buyer reads it.
    pub starts: String,
    pub tier: String,
    /// `Seat A-1-3` or `General admission`.
    pub place: String,
    pub order: Uuid,
    pub ticket: Uuid,
    pub version: i32,
    /// The signed code the QR code carries.
    pub code: String,
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;
/// The QR code's side, quiet zone included (about 9 cm: a scanner reads it from a print at arm's length).
const QR_SIDE: f32 = 260.0;
/// Modules of white around the code (the QR standard's quiet zone).
const QUIET: usize = 4;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// The PDF of `tickets`, one page each, in their order.
pub fn tickets_pdf(title: &str, tickets: &[PrintedTicket]) -> Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let (regular, bold) = (Ref::new(3), Ref::new(4));
    let info = Ref::new(5);
    let first = 6;
    let page_ids: Vec<Ref> = (0..tickets.len()).map(|i| Ref::new(first + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(tickets.len() as i32);
    pdf.document_info(info).title(TextStr(title)).creator(TextStr("ticketing box office"));
    for (font, base) in [(regular, &b"Helvetica"[..]), (bold, &b"Helvetica-Bold"[..])] {
        pdf.type1_font(font).base_font(Name(base)).encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (i, ticket) in tickets.iter().enumerate() {
        let (page_id, content_id) = (page_ids[i], Ref::new(first + 2 * i as i32 + 1));
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H)).parent(tree).contents(content_id);
        page.resources().fonts().pair(REGULAR, regular).pair(BOLD, bold);
        page.finish();
        pdf.stream(content_id, &page_content(ticket)?.finish());
    }
    Ok(pdf.finish())
}

fn page_content(t: &PrintedTicket) -> Result<Content> {
    let mut c = Content::new();
    let mut y = PAGE_H - MARGIN - 20.0;
    for line in wrap(&t.title, 38).into_iter().take(3) {
        text(&mut c, BOLD, 22.0, MARGIN, y, &line);
        y -= 28.0;
    }
    y -= 4.0;
    for (size, line) in [(13.0, t.venue.as_str()), (13.0, t.starts.as_str())] {
        text(&mut c, REGULAR, size, MARGIN, y, line);
        y -= 19.0;
    }
    y -= 10.0;
    text(&mut c, BOLD, 16.0, MARGIN, y, &format!("{} - {}", t.tier, t.place));
    y -= 24.0;

    // The QR code, centred.
    let code = qr(&t.code)?;
    let modules = code.width();
    let dark = code.to_colors();
    let unit = QR_SIDE / (modules + 2 * QUIET) as f32;
    let left = (PAGE_W - QR_SIDE) / 2.0 + QUIET as f32 * unit;
    let top = y - QUIET as f32 * unit;
    c.set_fill_gray(0.0);
    for row in 0..modules {
        // Each run of dark modules in a row is one rectangle.
        let mut col = 0;
        while col < modules {
            if dark[row * modules + col] != qrcode::Color::Dark {
                col += 1;
                continue;
            }
            let start = col;
            while col < modules && dark[row * modules + col] == qrcode::Color::Dark {
                col += 1;
            }
            let x = left + start as f32 * unit;
            let y = top - (row + 1) as f32 * unit;
            c.rect(x, y, (col - start) as f32 * unit, unit);
        }
    }
    c.fill_nonzero();
    y -= QR_SIDE + 16.0;

    let reissued = if t.version > 1 { format!(" (re-issued: version {})", t.version) } else { String::new() };
    for (size, line) in
        [(10.0, format!("Ticket {}{reissued}", t.ticket)), (10.0, format!("Order {}", t.order))]
    {
        text(&mut c, REGULAR, size, MARGIN, y, &line);
        y -= 15.0;
    }
    y -= 8.0;
    for line in [
        "Show this code at the entrance: it admits one person, once.",
        "Keep it to yourself: whoever shows it first gets in. A ticket re-issued",
        "at the box office gets a new code, and earlier prints no longer admit.",
    ] {
        text(&mut c, REGULAR, 10.0, MARGIN, y, line);
        y -= 14.0;
    }
    Ok(c)
}

fn text(c: &mut Content, font: Name, size: f32, x: f32, y: f32, line: &str) {
    let bytes = win_ansi(line);
    c.begin_text().set_font(font, size).next_line(x, y).show(Str(&bytes)).end_text();
}

/// `s` in WinAnsiEncoding: ASCII and Latin-1 as they are, anything else as `?`.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|ch| match ch as u32 {
            0x20..=0x7e | 0xa0..=0xff => ch as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// `s` in lines of at most `width` characters, broken between words where there are any.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in s.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let line = lines.last_mut().expect("one line at least");
            let used = line.chars().count();
            let room = if used == 0 { width } else { width.saturating_sub(used + 1) };
            if word.len() <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(String::new());
                continue;
            }
            // A word longer than a line: cut it.
            line.extend(word.drain(..width));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_break_between_words_and_cut_a_word_too_long() {
        assert_eq!(wrap("The Marriage of Figaro", 12), ["The Marriage", "of Figaro"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), [""]);
    }

    #[test]
    fn text_outside_latin_1_prints_as_question_marks() {
        assert_eq!(win_ansi("Café Ünter 東京"), b"Caf\xe9 \xdcnter ??".to_vec());
    }

    #[test]
    fn a_pdf_has_a_page_a_ticket() {
        let t = PrintedTicket {
            title: "Night (at) the \\ Opera".into(),
            venue: "Hall".into(),
            starts: "Sat 1 May 2027, 19:30".into(),
            tier: "Stalls".into(),
            place: "Seat A-1".into(),
            order: Uuid::nil(),
            ticket: Uuid::nil(),
            version: 2,
            code: "eyJhbGciOiJFZERTQSJ9.e30.c2ln".into(),
        };
        let pdf = tickets_pdf("Tickets", &[t.clone(), t]).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        assert_eq!(text.matches("/Type /Page\n").count() + text.matches("/Type /Page ").count(), 2, "{text}");
    }
}
