//! The buyer's pages, served by the edge as plain HTML: no build step, readable by a screen reader,
//! usable from the keyboard, and working without JavaScript (the waiting page refreshes itself with
//! `<meta http-equiv="refresh">`; the script only solves the proof of work and animates the clock).
//!
//! - `GET  /events/{event}`       the line: join form, or place and wait, or on to the purchase page
//!   (`Accept: application/json` gets the same as JSON)
//! - `POST /events/{event}/join`  the join form
//! - `GET  /events/{event}/buy`   the purchase page (admitted buyers): hold, check out, pay
//! - `GET  /orders/{order}`       the buyer's order (needs JavaScript: the order token stays in the
//!   browser)

use durable_objects::http;
use shared_types::waiting_room::{BotCheck, Phase, QueueStatus, RoomView, StatusState};
use shared_types::Problem;
use worker::{Request, Response, Result};

use crate::queue::{self, Credentials, Room, Standing};

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

const STYLE: &str = "body{font:1.1rem/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#111}\
h1{font-size:1.6rem}.box{border:2px solid #333;border-radius:.5rem;padding:1rem 1.25rem;margin:1rem 0}\
progress{width:100%;height:1.5rem}button{font:inherit;padding:.6rem 1.4rem;border:2px solid #114;border-radius:.4rem;\
background:#2a4bd7;color:#fff;cursor:pointer}button:focus-visible,a:focus-visible{outline:3px solid #e70;outline-offset:2px}\
.error{border-color:#a00;background:#fee}.muted{color:#444}dt{font-weight:600}";

fn page(title: &str, refresh: Option<u32>, body: &str) -> String {
    let refresh =
        refresh.map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">")).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

/// The Content-Security-Policy of a page whose scripts and styles carry `nonce`: nothing runs or
/// loads but the page's own scripts and styles (and Turnstile's, when an event uses it), it talks
/// only to this origin, and no other site may frame it (clickjacking on the buy and transfer pages).
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}' https://challenges.cloudflare.com; \
         style-src 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; \
         frame-src https://challenges.cloudflare.com; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    )
}

/// Every `<script` and `<style` of a page carries the response's nonce. Pages are built from
/// escaped text ([`escape`]), so the only such tags in `body` are the page's own.
fn with_nonce(body: &str, nonce: &str) -> String {
    body.replace("<script", &format!("<script nonce=\"{nonce}\""))
        .replace("<style", &format!("<style nonce=\"{nonce}\""))
}

fn html(status: u16, body: String) -> Result<Response> {
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let nonce = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, random);
    let mut resp = Response::from_html(with_nonce(&body, &nonce))?.with_status(status);
    let headers = resp.headers_mut();
    headers.set("cache-control", "no-store")?;
    headers.set("content-security-policy", &content_security_policy(&nonce))?;
    // For browsers that predate frame-ancestors.
    headers.set("x-frame-options", "DENY")?;
    headers.set("referrer-policy", "same-origin")?;
    Ok(resp)
}

fn see_other(location: &str, cookies: &[String]) -> Result<Response> {
    let mut resp = Response::empty()?.with_status(303);
    resp.headers_mut().set("location", location)?;
    for c in cookies {
        resp.headers_mut().append("set-cookie", c)?;
    }
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

fn wants_json(req: &Request) -> Result<bool> {
    let accept = req.headers().get("accept")?.unwrap_or_default();
    Ok(accept.contains("application/json") && !accept.contains("text/html"))
}

/// "3 min 20 s", "45 s", "2 h 5 min".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

fn countdown(on_sale_ms: i64) -> String {
    let left = ((on_sale_ms - durable_objects::now_ms()).max(0) / 1000) as u64;
    format!(
        "<p>Sales start in <strong><span id=\"countdown\" data-until=\"{on_sale_ms}\">{}</span></strong>.</p>",
        duration(left)
    )
}

/// What the pages call the event: its name when the organizer's settings give one, else its id.
fn event_name(room: &Room<'_>, view: Option<&RoomView>) -> String {
    view.map(|v| v.settings.display_name.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or(room.event.as_str())
        .to_owned()
}

/// The page when the buyer is not in line yet: what the line is doing, and the join form.
fn landing(
    room: &Room<'_>,
    view: &RoomView,
    challenge: Option<&serde_json::Value>,
    error: Option<&Problem>,
) -> String {
    let event = room.event;
    let mut body = format!("<h1>Tickets for {}</h1>", escape(&event_name(room, Some(view))));
    if let Some(p) = error {
        body.push_str(&format!(
            "<div class=\"box error\" role=\"alert\"><p><strong>{}</strong></p><p>{}</p></div>",
            escape(&p.title),
            escape(p.detail.as_deref().unwrap_or(""))
        ));
    }
    match view.phase {
        Phase::SoldOut => {
            body.push_str("<div class=\"box\" role=\"status\"><p>This event is <strong>sold out</strong>. The line is closed.</p></div>");
            return page("Sold out", None, &body);
        }
        Phase::Closed => {
            body.push_str(
                "<div class=\"box\" role=\"status\"><p>The line for this event is closed.</p></div>",
            );
            return page("Line closed", None, &body);
        }
        Phase::BeforeOpening => {
            let opens = view.settings.pre_queue_opens_at_ms.unwrap_or_default();
            let left = ((opens - durable_objects::now_ms()).max(0) / 1000) as u64;
            body.push_str(&format!(
                "<div class=\"box\" role=\"status\"><p>The line opens in <strong>{}</strong>. This page refreshes by itself.</p></div>",
                duration(left)
            ));
            return page("The line is not open yet", Some(left.clamp(1, 30) as u32), &body);
        }
        _ => {}
    }
    if let Some(sale) = view.settings.on_sale_at_ms.filter(|&s| s > durable_objects::now_ms()) {
        body.push_str(&countdown(sale));
        body.push_str("<p>Everyone who joins before the start gets a place drawn at random at the start; nobody gains by arriving first.</p>");
    } else {
        body.push_str(&format!(
            "<p>{} people are waiting. Places are given in the order people join.</p>",
            view.waiting
        ));
    }
    let mut fields = String::new();
    let mut script = String::new();
    match (&view.settings.bot.check, challenge) {
        (BotCheck::ProofOfWork { .. }, Some(c)) => {
            let token = c["challenge"].as_str().unwrap_or_default();
            let difficulty = c["difficulty"].as_u64().unwrap_or_default();
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"challenge\" value=\"{}\"><input type=\"hidden\" name=\"solution\" value=\"\">",
                escape(token)
            ));
            script =
                format!("<script>{}</script>", POW_SCRIPT.replace("DIFFICULTY", &difficulty.to_string()));
            body.push_str("<noscript><p class=\"box error\">Joining this line needs JavaScript for a short browser check.</p></noscript>");
        }
        (BotCheck::Turnstile { site_key }, _) => {
            fields.push_str(&format!(
                "<div class=\"cf-turnstile\" data-sitekey=\"{}\"></div>",
                escape(site_key)
            ));
            script =
                "<script src=\"https://challenges.cloudflare.com/turnstile/v0/api.js\" async defer></script>"
                    .into();
        }
        _ => {}
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/events/{event}/join\" id=\"join\">{fields}\
         <button type=\"submit\">Join the line</button></form>\
         <p id=\"check\" role=\"status\" aria-live=\"polite\" class=\"muted\"></p>{script}"
    ));
    page(&format!("Join the line: {}", event_name(room, Some(view))), None, &body)
}

/// Solves the proof of work in the browser (SHA-256 of `challenge.nonce` with DIFFICULTY leading
/// zero bits), then submits the form.
const POW_SCRIPT: &str = r#"(function(){var f=document.getElementById('join'),s=document.getElementById('check');
f.addEventListener('submit',async function(e){var sol=f.elements.solution;if(sol.value)return;e.preventDefault();
f.querySelector('button').disabled=true;s.textContent='Checking your browser, one moment...';
var ch=f.elements.challenge.value,enc=new TextEncoder(),d=DIFFICULTY;
function zeros(b){var n=0;for(var i=0;i<b.length;i++){if(b[i]===0){n+=8;continue;}return n+Math.clz32(b[i])-24;}return n;}
for(var n=0;;n++){var h=new Uint8Array(await crypto.subtle.digest('SHA-256',enc.encode(ch+'.'+n)));
if(zeros(h)>=d){sol.value=String(n);break;}}s.textContent='Joining...';f.submit();});})();"#;

/// Animates the countdown (the page also refreshes itself without this).
const CLOCK_SCRIPT: &str = r#"(function(){var c=document.getElementById('countdown');if(!c)return;
var until=+c.dataset.until;function fmt(s){return s<60?s+' s':s<3600?Math.floor(s/60)+' min '+(s%60)+' s':Math.floor(s/3600)+' h '+Math.floor(s%3600/60)+' min';}
setInterval(function(){var s=Math.max(0,Math.round((until-Date.now())/1000));c.textContent=fmt(s);if(s===0)location.reload();},1000);})();"#;

/// The page of someone in line.
fn waiting(room: &Room<'_>, view: &RoomView, status: &QueueStatus) -> String {
    let mut body = format!("<h1>You are in line for {}</h1>", escape(&event_name(room, Some(view))));
    let percent = (status.progress * 100.0).round() as u32;
    match status.state {
        StatusState::SoldOut => body.push_str("<div class=\"box\" role=\"status\"><p>Sorry: this event has <strong>sold out</strong>.</p></div>"),
        StatusState::Closed => body.push_str("<div class=\"box\" role=\"status\"><p>The line for this event has been closed.</p></div>"),
        StatusState::PreQueue => {
            body.push_str("<div class=\"box\" role=\"status\"><p>You have joined before the start. Your place will be drawn at random when sales start.</p></div>");
            if let Some(sale) = status.on_sale_at_ms {
                body.push_str(&countdown(sale));
            }
        }
        _ => {
            let position = status.position.map_or("being worked out".to_owned(), |p| p.to_string());
            let wait = status.estimated_wait_seconds.map_or("a moment".to_owned(), duration);
            let paused = if status.state == StatusState::Paused {
                "<p><strong>Admission is paused for a moment.</strong> You keep your place.</p>"
            } else {
                ""
            };
            body.push_str(&format!(
                "<div class=\"box\" role=\"status\">{paused}<dl><dt>Your place in line</dt><dd id=\"position\">{position}</dd>\
                 <dt>Estimated wait</dt><dd id=\"wait\">{wait}</dd></dl>\
                 <label for=\"progress\">Progress</label>\
                 <progress id=\"progress\" max=\"100\" value=\"{percent}\" aria-valuetext=\"{percent} percent of the line ahead of you has gone in\">{percent}%</progress></div>"
            ));
        }
    }
    body.push_str(&format!(
        "<p class=\"muted\">This page refreshes by itself every {} seconds. Keep it open; if you leave and come back soon, you keep your place.</p>\
         <script>{CLOCK_SCRIPT}</script>",
        status.poll_after_seconds
    ));
    page(&format!("In line: {}", event_name(room, Some(view))), Some(status.poll_after_seconds), &body)
}

/// `GET /events/{event}`.
pub async fn event_page(room: &Room<'_>, req: &Request) -> Result<Response> {
    // The caller's tokens are read and verified once; every branch below works from them.
    let credentials = queue::credentials(room, req)?;
    if wants_json(req)? {
        if !matches!(credentials, Credentials::None(..)) {
            return queue::status_of_caller(room, req, credentials).await;
        }
        return match queue::view(room.env, room.event).await? {
            Some(view) => {
                let mut resp = http::json(
                    200,
                    &serde_json::json!({
                        "event": view.event,
                        "phase": view.phase,
                        "on_sale_at_ms": view.settings.on_sale_at_ms,
                        "waiting": view.waiting,
                        "admit_rate_per_minute": view.admit_rate_per_minute,
                        "join": format!("/api/v1/events/{}/queue", room.event),
                    }),
                )?;
                resp.headers_mut().set("cache-control", "public, max-age=1")?;
                Ok(resp)
            }
            None => http::problem_of(shared_types::ProblemType::NotFound, "no such event", room.path),
        };
    }
    let Some(view) = queue::view(room.env, room.event).await? else {
        return html(404, page("No such event", None, "<h1>No such event</h1><p>There is no sale here.</p>"));
    };
    if matches!(credentials, Credentials::None(..)) {
        return landing_with_challenge(room, req, &view, None, 200).await;
    }
    match queue::standing(room, req, credentials).await? {
        Ok(Standing::Admitted { cookie, .. }) => {
            see_other(&format!("/events/{}/buy", room.event), &cookie.into_iter().collect::<Vec<_>>())
        }
        Ok(Standing::Waiting { status, .. }) => html(200, waiting(room, &view, &status)),
        Err(mut resp) => {
            // The ticket cannot go further (expired turn, left, …): say why, offer to join again.
            let problem: Option<Problem> = resp.json().await.ok();
            landing_with_challenge(room, req, &view, problem.as_ref(), resp.status_code()).await
        }
    }
}

async fn landing_with_challenge(
    room: &Room<'_>,
    req: &Request,
    view: &RoomView,
    problem: Option<&Problem>,
    status: u16,
) -> Result<Response> {
    let mut cookies = Vec::new();
    let mut challenge = None;
    if view.phase.accepts_joins() && matches!(view.settings.bot.check, BotCheck::ProofOfWork { .. }) {
        let mut resp = queue::challenge(room, req).await?;
        if resp.status_code() == 200 {
            for c in resp.headers().get("set-cookie")?.into_iter() {
                cookies.push(c);
            }
            challenge = Some(resp.json::<serde_json::Value>().await?);
        }
    }
    let mut resp = html(status, landing(room, view, challenge.as_ref(), problem))?;
    for c in cookies {
        resp.headers_mut().append("set-cookie", &c)?;
    }
    Ok(resp)
}

/// `POST /events/{event}/join` (the form).
pub async fn join_form(room: &Room<'_>, mut req: Request) -> Result<Response> {
    match queue::join(room, &mut req).await? {
        Ok((_, cookies)) => see_other(&format!("/events/{}", room.event), &cookies),
        Err(mut refused) => {
            let problem: Option<Problem> = refused.json().await.ok();
            let status = refused.status_code();
            match queue::view(room.env, room.event).await? {
                Some(view) => landing_with_challenge(room, &req, &view, problem.as_ref(), status).await,
                None => html(404, page("No such event", None, "<h1>No such event</h1>")),
            }
        }
    }
}

/// `GET /events/{event}/buy`: the purchase page for an admitted buyer (seat choice comes later).
pub async fn buy_page(room: &Room<'_>, req: &Request) -> Result<Response> {
    let Some((_, claims)) = queue::held_admission(room, req)? else {
        return see_other(&format!("/events/{}", room.event), &[]);
    };
    let left = ((claims.exp * 1000 - durable_objects::now_ms()).max(0) / 1000) as u64;
    let view = queue::view(room.env, room.event).await?;
    let name = escape(&event_name(room, view.as_deref()));
    let body = format!(
        "<h1>You're in: {name}</h1><div class=\"box\" role=\"status\"><p>It is your turn to buy. \
         You may buy up to <strong>{max}</strong> tickets.</p>\
         <p>Your session ends in <strong><span id=\"countdown\" data-until=\"{until}\">{left}</span></strong>.</p></div>\
         <form id=\"buy\" data-event=\"{event}\" class=\"box\">\
         <p><label for=\"quantity\">Seats (best available)</label><br>\
         <input id=\"quantity\" name=\"quantity\" type=\"number\" min=\"1\" max=\"{max}\" value=\"2\" required></p>\
         <p><label for=\"email\">E-mail for your tickets</label><br>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required></p>\
         <p><label for=\"promo\">Promo code (optional)</label><br><input id=\"promo\" name=\"promo\"></p>\
         <p><button type=\"submit\">Hold my seats and pay</button></p></form>\
         <p id=\"buy-status\" role=\"status\" aria-live=\"polite\"></p>\
         <noscript><p class=\"box error\">Paying needs JavaScript.</p></noscript>\
         <p class=\"muted\">Seats available right now: <a href=\"/api/v1/events/{event}/availability\">availability</a>.</p>\
         <script>{CLOCK_SCRIPT}</script><script>{BUY_SCRIPT}</script>",
        event = escape(room.event.as_str()),
        name = name,
        max = claims.extra.max_tickets,
        until = claims.exp * 1000,
        left = duration(left),
    );
    html(200, page(&format!("Buy tickets: {}", event_name(room, view.as_deref())), None, &body))
}

/// The purchase: hold the best seats (the admission cookie authenticates), check out with a key
/// kept for this hold (a retry buys once), then go to the order page (its token in the fragment,
/// never sent to a server, and in this tab's storage).
const BUY_SCRIPT: &str = r#"(function(){var f=document.getElementById('buy');if(!f)return;
var out=document.getElementById('buy-status'),ev=f.getAttribute('data-event');
function say(t,bad){out.textContent=t;out.className=bad?'box error':'';}
async function json(r){try{return await r.json();}catch(e){return {};}}
f.addEventListener('submit',async function(e){e.preventDefault();var b=f.querySelector('button');b.disabled=true;
try{say('Holding your seats…');
var q=parseInt(f.quantity.value,10);
var h=await fetch('/api/v1/events/'+ev+'/holds',{method:'POST',headers:{'content-type':'application/json'},
 body:JSON.stringify({kind:'best_available',quantity:q})});var hb=await json(h);
if(h.status!==201&&h.status!==200){say('We could not hold seats: '+(hb.detail||h.status),true);b.disabled=false;return;}
var seats=(hb.hold.seats||[]).join(', ');say('Held '+(seats||q+' places')+'. Creating your order…');
var k=sessionStorage.getItem('checkout-'+hb.hold.id);if(!k){k=crypto.randomUUID();sessionStorage.setItem('checkout-'+hb.hold.id,k);}
var body={hold_token:hb.hold_token,email:f.email.value,return_url:location.origin+'/orders/'};
if(f.promo.value)body.promo_code=f.promo.value;
var c=await fetch('/api/v1/checkout',{method:'POST',headers:{'content-type':'application/json','idempotency-key':k},body:JSON.stringify(body)});
var cb=await json(c);
if(c.status!==201&&c.status!==200){say('Your order could not be made: '+(cb.detail||c.status),true);b.disabled=false;return;}
sessionStorage.setItem('order-'+cb.order.id,cb.order_token);
location.href='/orders/'+cb.order.id+'#'+cb.order_token;
}catch(err){say('Something went wrong: '+err,true);b.disabled=false;}});})();"#;

/// `GET /orders/{id}`: the buyer's order page. The order token comes from the fragment (or this
/// tab's storage); the script asks `/api/v1/orders/{id}` and follows the order until it is final.
pub fn order_page(order: &str) -> Result<Response> {
    let order = escape(order);
    let body = format!(
        "<h1>Your order</h1><div id=\"order\" data-order=\"{order}\" class=\"box\" role=\"status\" aria-live=\"polite\">\
         <p>Loading your order…</p></div>\
         <noscript><p class=\"box error\">This page needs JavaScript to show your order.</p></noscript>\
         <script>{ORDER_SCRIPT}</script>"
    );
    html(200, page("Your order", None, &body))
}

const ORDER_SCRIPT: &str = r#"(function(){var box=document.getElementById('order'),id=box.getAttribute('data-order');
var t=location.hash.slice(1)||sessionStorage.getItem('order-'+id);
if(location.hash){sessionStorage.setItem('order-'+id,t);history.replaceState(null,'',location.pathname);}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});}
function money(m,c){return (m/100).toFixed(2)+' '+esc(c);}
var words={created:'Being created',awaiting_payment:'Waiting for your payment',confirming:'Paid — confirming your seats',
 paid:'Paid',releasing:'Being cancelled',cancelled:'Cancelled',refunding:'Being refunded',refunded:'Refunded'};
async function load(){if(!t){box.innerHTML='<p>We do not have this order\'s key in this browser.</p>';return;}
var r=await fetch('/api/v1/orders/'+id,{headers:{authorization:'Bearer '+t}});
if(r.status!==200){box.innerHTML='<p>This order could not be shown ('+r.status+').</p>';return;}
var o=await r.json(),h='<h2 id="state">'+esc(words[o.state]||o.state)+'</h2>';
h+='<dl><dt>Total</dt><dd>'+money(o.total_minor,o.currency)+(o.tax_included?' (tax included)':'')+'</dd>';
if(o.refund_minor>0)h+='<dt>Refunded</dt><dd>'+money(o.refund_minor,o.currency)+'</dd>';
if(o.outcome)h+='<dt>Why</dt><dd>'+esc(o.outcome.replace(/_/g,' '))+'</dd>';
h+='</dl>';
if(o.state==='awaiting_payment'&&o.payment&&o.payment.redirect_url){
 h+='<p>Please pay before '+esc(new Date(o.hold_expires_at).toLocaleTimeString())+'.</p><p><a id="pay" href="'+esc(o.payment.redirect_url)+'">Pay now</a></p>';}
var live=(o.tickets||[]).filter(function(x){return x.state==='valid';});
if(o.tickets&&o.tickets.length){h+='<h2>Your tickets</h2><ul>';o.tickets.forEach(function(x){
 h+='<li>'+(x.seat_id?'Seat '+esc(x.seat_id):'Standing')+' — '+(x.transferred?'given to someone else':esc(x.state))+'</li>';});h+='</ul>';
 live=live.filter(function(x){return !x.transferred;});
 live.forEach(function(x){h+='<figure class="qr" id="qr-'+esc(x.id)+'"><figcaption>'+(x.seat_id?'Seat '+esc(x.seat_id):'Standing')+
  ': show this at the gate</figcaption></figure><form class="give" data-ticket="'+esc(x.id)+'"><label>Give this ticket to (e-mail) '+
  '<input type="email" name="to" required></label> <button>Send</button> <span class="said" role="status"></span></form>';});}
box.innerHTML=h;
box.querySelectorAll('form.give').forEach(function(f){f.addEventListener('submit',async function(e){e.preventDefault();
 var said=f.querySelector('.said'),r=await fetch('/api/v1/orders/'+id+'/tickets/'+f.getAttribute('data-ticket')+'/transfer',
 {method:'POST',headers:{authorization:'Bearer '+t,'content-type':'application/json'},body:JSON.stringify({to_email:f.to.value})});
 var j=await r.json();said.textContent=r.status===201?'Offered to '+j.to_email+' until '+new Date(j.expires_at).toLocaleString()+
 '. It stays yours until they accept.':(j.detail||('Could not offer it ('+r.status+')'));});});
live.forEach(async function(x){var q=await fetch('/api/v1/orders/'+id+'/tickets/'+x.id+'/qr.svg',{headers:{authorization:'Bearer '+t}});
 if(q.status===200){var f=document.getElementById('qr-'+x.id);var d=document.createElement('div');d.setAttribute('role','img');
 d.setAttribute('aria-label','QR code of the ticket');d.innerHTML=await q.text();f.appendChild(d);}});
if(['paid','cancelled','refunded'].indexOf(o.state)<0)setTimeout(load,2000);}
load();})();"#;

/// `GET /transfers/{id}`: a ticket offered to the visitor. The transfer token comes from the
/// fragment of the mail's link; the script shows the offer, accepts or declines it, and then shows
/// the ticket's QR code.
pub fn transfer_page(transfer: &str) -> Result<Response> {
    let transfer = escape(transfer);
    let body = format!(
        "<h1>A ticket for you</h1><div id=\"transfer\" data-transfer=\"{transfer}\" class=\"box\" role=\"status\" aria-live=\"polite\">\
         <p>Loading the offer…</p></div>\
         <noscript><p class=\"box error\">This page needs JavaScript to show the offer.</p></noscript>\
         <script>{TRANSFER_SCRIPT}</script>"
    );
    html(200, page("A ticket for you", None, &body))
}

const TRANSFER_SCRIPT: &str = r#"(function(){var box=document.getElementById('transfer'),id=box.getAttribute('data-transfer');
var t=location.hash.slice(1)||sessionStorage.getItem('transfer-'+id);
if(location.hash){sessionStorage.setItem('transfer-'+id,t);history.replaceState(null,'',location.pathname);}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});}
function when(s){return esc(new Date(s).toLocaleString());}
var auth={authorization:'Bearer '+t};
function show(x){var h='<p><strong>'+esc(x.event_title)+'</strong>, '+when(x.starts_at)+'</p>'+
 '<p>'+esc(x.tier)+(x.seat_id?', seat '+esc(x.seat_id):'')+'</p><p id="state">';
 var o=x.onward;
 if(x.state==='offered'){h+='Offered to '+esc(x.to_email)+' until '+when(x.expires_at)+'.</p>'+
  '<p><button id="accept">Accept the ticket</button> <button id="decline">No, thanks</button></p>';}
 else if(x.state==='accepted'&&x.code){h+='It is yours: show this at the gate.</p><figure class="qr" id="qr"></figure>';
  if(o&&o.state==='offered'){h+='<p id="onward">You offered it to '+esc(o.to_email)+' until '+when(o.expires_at)+
   '; it stays yours until they accept. <button id="withdraw">Withdraw the offer</button></p>';}
  else{h+='<form id="pass"><label for="to">Give it to someone else: their e-mail</label> '+
   '<input id="to" type="email" required autocomplete="email"> <button>Send the offer</button></form>';}}
 else if(x.state==='accepted'){h+=(o&&o.state==='accepted'?'You gave it to '+esc(o.to_email)+'.':'It is no longer yours.')+'</p>';}
 else{h+='This offer is '+esc(x.state)+'.</p>';}
 box.innerHTML=h;
 if(x.state==='offered'){document.getElementById('accept').onclick=function(){act('/accept',null,false);};
  document.getElementById('decline').onclick=function(){act('/decline',null,false);};}
 var pass=document.getElementById('pass'),withdraw=document.getElementById('withdraw');
 if(pass)pass.onsubmit=function(e){e.preventDefault();act('/transfer',{to_email:document.getElementById('to').value},true);};
 if(withdraw)withdraw.onclick=function(){act('/transfer/cancel',null,true);};
 if(x.code){fetch('/api/v1/transfers/'+id+'/qr.svg',{headers:auth}).then(function(r){return r.status===200?r.text():'';})
  .then(function(svg){var d=document.createElement('div');d.setAttribute('role','img');d.setAttribute('aria-label','QR code of the ticket');
  d.innerHTML=svg;document.getElementById('qr').appendChild(d);});}}
async function act(what,body,reload){var init={method:'POST',headers:Object.assign({},auth)};
 if(body){init.headers['content-type']='application/json';init.body=JSON.stringify(body);}
 var r=await fetch('/api/v1/transfers/'+id+what,init);var j=await r.json();
 if(r.status===200||r.status===201){if(reload)load();else show(j);}
 else box.insertAdjacentHTML('beforeend','<p class="error" role="alert">'+esc(j.detail||r.status)+'</p>');}
async function load(){if(!t){box.innerHTML='<p>Open this page from the link in your mail.</p>';return;}
 var r=await fetch('/api/v1/transfers/'+id,{headers:auth});
 if(r.status!==200){box.innerHTML='<p>This offer could not be shown ('+r.status+').</p>';return;}show(await r.json());}
load();})();"#;
