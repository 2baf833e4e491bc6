// The order page: the order token comes from the fragment (or this tab's storage); asks
// /api/v1/orders/{id} and follows the order until it is final (a long poll: the core answers when
// the order leaves the state shown, or after 20 s); shows the tickets' QR codes and
// offers each ticket to someone else by e-mail.
(function(){var box=document.getElementById('order'),id=box.getAttribute('data-order');
var t=location.hash.slice(1)||sessionStorage.getItem('order-'+id);
if(location.hash){sessionStorage.setItem('order-'+id,t);history.replaceState(null,'',location.pathname);}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});}
function money(m,c){return (m/100).toFixed(2)+' '+esc(c);}
var words={created:'Being created',awaiting_payment:'Waiting for your payment',confirming:'Paid — confirming your seats',
 paid:'Paid',releasing:'Being cancelled',cancelled:'Cancelled',refunding:'Being refunded',refunded:'Refunded'};
async function load(shown){if(!t){box.innerHTML='<p>We do not have this order\'s key in this browser.</p>';return;}
var asked=Date.now(),r=await fetch('/api/v1/orders/'+id+(shown?'?wait=20&while='+shown:''),{headers:{authorization:'Bearer '+t}});
if(r.status>=500)throw new Error('the server is unavailable ('+r.status+')');
if(r.status!==200){box.innerHTML='<p>This order could not be shown ('+r.status+').</p>';return;}
var o=await r.json(),h='<h2 id="state">'+esc(words[o.state]||o.state)+'</h2>';
h+='<dl><dt>Total</dt><dd>'+money(o.total_minor,o.currency)+(o.tax_included?' (tax included)':'')+'</dd>';
if(o.refund_minor>0)h+='<dt>Refunded</dt><dd>'+money(o.refund_minor,o.currency)+'</dd>';
if(o.outcome)h+='<dt>Why</dt><dd>'+esc(o.outcome.replace(/_/g,' '))+'</dd>';
if(o.phone)h+='<dt>Texts to</dt><dd>'+esc(o.phone)+' (reply STOP to any to get no more)</dd>';
h+='</dl>';
if(o.state==='awaiting_payment'&&o.payment&&o.payment.redirect_url){
 h+='<p>Please pay before '+esc(new Date(o.hold_expires_at).toLocaleTimeString())+'.</p><p><a id="pay" href="'+esc(o.payment.redirect_url)+'">Pay now</a></p>';}
var live=(o.tickets||[]).filter(function(x){return x.state==='valid';});
if(o.tickets&&o.tickets.length){h+='<h2>Your tickets</h2><ul>';o.tickets.forEach(function(x){
 h+='<li>'+(x.seat_id?'Seat '+esc(x.seat_id):'Standing')+' — '+(x.transferred?'given to someone else':esc(x.state))+'</li>';});h+='</ul>';
 live=live.filter(function(x){return !x.transferred;});
 live.forEach(function(x){h+='<figure class="qr" id="qr-'+esc(x.id)+'"><figcaption>'+(x.seat_id?'Seat '+esc(x.seat_id):'Standing')+
  ': show this at the gate</figcaption></figure><form class="give" data-ticket="'+esc(x.id)+'"><label>Give this ticket to (e-mail) '+
  '<input type="email" name="to" required></label> '+
  // Where the shop texts (this order has a number), the offer can go by text too.
  (o.phone?'<label>and their mobile (optional) <input type="tel" name="phone" autocomplete="off" inputmode="tel" maxlength="32"></label> ':'')+
  '<button>Send</button> <span class="said" role="status"></span></form>';});}
box.innerHTML=h;
box.querySelectorAll('form.give').forEach(function(f){f.addEventListener('submit',async function(e){e.preventDefault();
 var said=f.querySelector('.said'),r=await fetch('/api/v1/orders/'+id+'/tickets/'+f.getAttribute('data-ticket')+'/transfer',
 {method:'POST',headers:{authorization:'Bearer '+t,'content-type':'application/json'},
  body:JSON.stringify(f.phone&&f.phone.value.trim()?{to_email:f.to.value,to_phone:f.phone.value.trim()}:{to_email:f.to.value})});
 var j=await r.json();said.textContent=r.status===201?'Offered to '+j.to_email+' until '+new Date(j.expires_at).toLocaleString()+
 '. It stays yours until they accept.':(j.detail||('Could not offer it ('+r.status+')'));});});
live.forEach(async function(x){var q=await fetch('/api/v1/orders/'+id+'/tickets/'+x.id+'/qr.svg',{headers:{authorization:'Bearer '+t}});
 if(q.status===200){var f=document.getElementById('qr-'+x.id);var d=document.createElement('div');d.setAttribute('role','img');
 d.setAttribute('aria-label','QR code of the ticket');d.innerHTML=await q.text();f.appendChild(d);}});
if(['paid','cancelled','refunded'].indexOf(o.state)<0)
 setTimeout(function(){follow(o.state);},o.state===shown&&Date.now()-asked<1000?2000:0);}
// A request that fails (the network, a restart) is tried again two seconds later.
function follow(shown){load(shown).catch(function(){setTimeout(function(){follow(shown);},2000);});}
follow();})();
