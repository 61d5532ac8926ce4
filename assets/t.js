/* salestrack click snippet. Put on every page of your site:
 *   <script async src="https://YOUR-SALESTRACK-HOST/t.js"></script>
 * It reads ?ref= (and sclid) from the landing URL, records the click once per
 * landing, keeps the click id in a first-party cookie for the attribution
 * window, and exposes it as window.salestrack.clickId so that checkout can
 * pass it to Stripe as client_reference_id or metadata salestrack_click_id. */
(function () {
  "use strict";
  var COOKIE = "st_click";
  var VISITOR = "st_vid";
  var DAYS = 90;
  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src).origin : "";
  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var kv = parts[i].split("=");
      if (kv[0] === name) return decodeURIComponent(kv.slice(1).join("="));
    }
    return null;
  }
  function writeCookie(name, value) {
    var expires = new Date(Date.now() + DAYS * 864e5).toUTCString();
    document.cookie = name + "=" + encodeURIComponent(value) + "; expires=" + expires + "; path=/; SameSite=Lax";
  }
  function randomId() {
    var a = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return "vis_" + Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var api = (window.salestrack = window.salestrack || {});
  api.clickId = readCookie(COOKIE);
  var params = new URLSearchParams(window.location.search);
  var ref = params.get("ref");
  var sclid = params.get("sclid");
  if (sclid) {
    // Arrived through /r/{slug}: the click is already recorded.
    api.clickId = sclid;
    writeCookie(COOKIE, sclid);
    return;
  }
  if (!ref) return;
  var landingKey = "st_landed:" + window.location.href;
  try { if (sessionStorage.getItem(landingKey)) return; sessionStorage.setItem(landingKey, "1"); } catch (e) {}
  var visitor = readCookie(VISITOR) || randomId();
  writeCookie(VISITOR, visitor);
  fetch(base + "/api/v1/track/click", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ref: ref, landing_url: window.location.href, referrer: document.referrer || null, visitor_id: visitor }),
    keepalive: true
  }).then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
    if (body && body.click_id) { api.clickId = body.click_id; writeCookie(COOKIE, body.click_id); }
  }).catch(function () {});
})();
