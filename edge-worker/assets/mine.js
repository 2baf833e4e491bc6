// "My tickets": with the sign-in token in the fragment (from the mailed link), lists the buyer's
// orders and the tickets given to them, each opening its own page; without one, asks for the
// address to mail a link to. The token stays in this tab (fragment, then session storage).
(function(){var box=document.getElementById('mine');
var t=location.hash.slice(1)||sessionStorage.getItem('sign-in');
if(location.hash){sessionStorage.setItem('sign-in',t);history.replaceState(null,'',location.pathname);}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});}
function when(s){return esc(new Date(s).toLocaleString());}
function money(m,c){return (m/100).toFixed(2)+' '+esc(c);}
var words={awaiting_payment:'Waiting for payment',confirming:'Being confirmed',paid:'Paid',releasing:'Being cancelled',
 cancelled:'Cancelled',refunding:'Being refunded',refunded:'Refunded',offered:'Offered to you',accepted:'Yours'};
function ask(note){box.innerHTML=(note?'<p>'+esc(note)+'</p>':'')+
 '<p>We mail you a link to your orders and tickets: no password needed.</p>'+
 '<form id="ask"><label for="email">Your e-mail address</label> '+
 '<input id="email" type="email" required autocomplete="email" maxlength="254"> <button>Send me a link</button></form>';
 document.getElementById('ask').onsubmit=async function(e){e.preventDefault();
  var r=await fetch('/api/v1/buyer/sign-in',{method:'POST',headers:{'content-type':'application/json'},
   body:JSON.stringify({email:document.getElementById('email').value})});
  var j=await r.json().catch(function(){return {};});
  if(r.status===202)box.innerHTML='<p id="sent">Check your mailbox: '+esc(j.detail)+'. The link works for '+esc(j.valid_minutes)+' minutes.</p>';
  else box.insertAdjacentHTML('beforeend','<p class="error" role="alert">'+esc(j.detail||r.status)+'</p>');};}
function item(x,what){return '<li><a href="'+esc(x.link)+'">'+esc(x.event_title)+'</a>, '+when(x.starts_at)+
 (x.venue?' · '+esc(x.venue):'')+'<br><span class="muted">'+esc(words[x.state]||x.state)+what+'</span></li>';}
async function load(){if(!t){ask();return;}
 var r=await fetch('/api/v1/buyer/orders',{headers:{authorization:'Bearer '+t}});
 if(r.status===401){sessionStorage.removeItem('sign-in');t=null;ask('This link has expired. Ask for a new one.');return;}
 if(r.status!==200){box.innerHTML='<p>Your orders could not be shown ('+r.status+'). Please try again.</p>';return;}
 var m=await r.json(),h='<p>Orders and tickets of <strong>'+esc(m.email)+'</strong>.</p>';
 if(!m.orders.length&&!m.transfers.length)h+='<p>Nothing here.</p>';
 if(m.orders.length){h+='<h2>Your orders</h2><ul class="events" id="orders">';
  m.orders.forEach(function(o){h+=item(o,' · '+o.tickets+' ticket'+(o.tickets===1?'':'s')+' · '+money(o.total_minor,o.currency));});h+='</ul>';}
 if(m.transfers.length){h+='<h2>Tickets given to you</h2><ul class="events" id="gifts">';
  m.transfers.forEach(function(x){h+=item(x,'');});h+='</ul>';}
 h+='<p class="muted">This page works until '+when(m.expires_at)+'.</p>';box.innerHTML=h;}
load();})();
