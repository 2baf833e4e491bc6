//! Tickets as their codes and QR codes need them.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use qrcode::{EcLevel, QrCode};
use uuid::Uuid;

use crate::error::{ApiError, Result};

/// Pixels per QR module in the PNG, and the quiet zone around the code (in modules).
const PNG_SCALE: usize = 6;

const QUIET_ZONE: usize = 4;

/// The columns of a [`TicketRow`], from `tickets t JOIN events e ON e.id = t.event_id`.
pub const TICKET_COLUMNS: &str =
    "t.id, t.event_id, t.tier_id, t.seat_id, t.holder_email, t.version, t.state, t.created_at, e.ends_at";

/// A ticket as its code needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub tier_id: Uuid,
    pub seat_id: Option<String>,
    pub holder_email: String,
    pub version: i32,
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// The event's end: codes are good until a day after it.
    pub ends_at: DateTime<Utc>,
}

pub fn qr(code: &str) -> Result<QrCode> {
    // Medium error correction: a phone screen with a scratch or glare still reads.
    QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::Unavailable(format!("the code does not fit a QR code: {e}")))
}

/// The QR code as SVG.
pub fn qr_svg(code: &str) -> Result<String> {
    Ok(qr(code)?.render::<qrcode::render::svg::Color<'_>>().quiet_zone(true).min_dimensions(256, 256).build())
}

/// The QR code as an 8-bit greyscale PNG.
pub fn qr_png(code: &str) -> Result<Vec<u8>> {
    let qr = qr(code)?;
    let modules = qr.width();
    let dark = qr.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if dark[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..PNG_SCALE {
                    let row = (y + QUIET_ZONE) * PNG_SCALE + dy;
                    let start = row * side + (x + QUIET_ZONE) * PNG_SCALE;
                    pixels[start..start + PNG_SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let written = encoder.write_header().and_then(|mut w| w.write_image_data(&pixels));
    written.map_err(|e| ApiError::Unavailable(format!("the PNG could not be written: {e}")))?;
    Ok(out)
}

/// A code's QR code as the file `qr.svg` or `qr.png` (private: a code admits whoever shows it).
pub fn qr_file(code: &str, file: &str) -> Result<Response> {
    let private = (header::CACHE_CONTROL, "private, no-store");
    match file {
        "qr.svg" => Ok(([(header::CONTENT_TYPE, "image/svg+xml"), private], qr_svg(code)?).into_response()),
        "qr.png" => Ok(([(header::CONTENT_TYPE, "image/png"), private], qr_png(code)?).into_response()),
        _ => Err(ApiError::NotFound),
    }
}
