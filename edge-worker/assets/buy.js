// The purchase page: holds the best seats (the admission cookie authenticates), checks out with an
// Idempotency-Key kept for this hold (a retry buys once), then goes to the order page (its token in
// the fragment, never sent to a server, and in this tab's storage).
(function(){var f=document.getElementById('buy');if(!f)return;
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
}catch(err){say('Something went wrong: '+err,true);b.disabled=false;}});})();
