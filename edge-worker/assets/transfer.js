// The page of a ticket offered to the visitor: the transfer token comes from the fragment of the
// mail's link; shows the offer, accepts or declines it, then shows the ticket's QR code and lets the
// new holder pass it on.
(function(){var box=document.getElementById('transfer'),id=box.getAttribute('data-transfer');
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
load();})();
