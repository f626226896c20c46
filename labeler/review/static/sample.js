// labeler review: the sample page (layers, pointer readout, selection, keyboard decisions).
const S = JSON.parse(document.getElementById('data').textContent);
const W = S.width, H = S.height;
let depth = null, ids = null, sel = null;
fetch(S.maps).then(r => r.arrayBuffer()).then(b => {
  depth = new Float32Array(b, 0, W * H); ids = new Uint16Array(b, W * H * 4, W * H);
});
const stack = document.getElementById('stack'), readout = document.getElementById('readout');
const status = document.getElementById('status'), note = document.getElementById('note');
function badge(d) {
  const s = document.createElement('span');
  s.className = 'badge' + (d ? ' ' + d : ''); s.textContent = d || 'undecided'; return s;
}
function pixel(e) {
  const r = stack.getBoundingClientRect();
  const x = Math.floor((e.clientX - r.left) * W / r.width), y = Math.floor((e.clientY - r.top) * H / r.height);
  return (x >= 0 && y >= 0 && x < W && y < H) ? [x, y] : null;
}
stack.addEventListener('mousemove', e => {
  const p = pixel(e); if (!p || !depth) return;
  const i = p[1] * W + p[0], z = depth[i], o = ids[i];
  readout.textContent = `x ${p[0]} y ${p[1]} · depth ${isNaN(z) ? 'invalid' : z.toFixed(3) + ' m'}` +
    (o ? ` · object ${o}` : ' · no object');
});
stack.addEventListener('click', e => { const p = pixel(e); if (p && ids) select(ids[p[1] * W + p[0]] || null); });
function select(id) {
  sel = id;
  document.querySelectorAll('tr.obj').forEach(tr => tr.classList.toggle('sel', Number(tr.dataset.id) === id));
  document.getElementById('target').textContent = id ? 'object ' + id : 'the sample';
  const track = id ? S.tracks[String(id)] : undefined, open = document.getElementById('open-track');
  open.hidden = track === undefined;
  if (track !== undefined) { open.href = '/track/' + track; open.firstChild.textContent = `open its track ${track} `; }
  const c = document.getElementById('sel'), g = c.getContext('2d');
  g.clearRect(0, 0, W, H);
  if (!id || !ids) return;
  const img = g.createImageData(W, H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = y * W + x; if (ids[i] !== id) continue;
    if (x === 0 || y === 0 || x === W - 1 || y === H - 1 || ids[i - 1] !== id || ids[i + 1] !== id ||
        ids[i - W] !== id || ids[i + W] !== id) { img.data.set([255, 230, 0, 255], 4 * i); }
  }
  g.putImageData(img, 0, 0);
}
document.querySelectorAll('tr.obj').forEach(tr => tr.addEventListener('click', () => select(Number(tr.dataset.id))));
async function decide(d) {
  const body = {sample_id: S.sample_id, object_id: sel, decision: d, note: note.value};
  status.textContent = 'saving…';
  const r = await fetch('/api/decide', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify(body)});
  if (!r.ok) { status.textContent = 'not saved: ' + (await r.text()); return; }
  const s = await r.json();
  const old = document.getElementById('sample-decision'), b = badge(s.sample);
  b.id = 'sample-decision'; old.replaceWith(b);
  document.querySelectorAll('tr.obj').forEach(tr => {
    tr.querySelector('.odec').replaceChildren(badge(s.objects[tr.dataset.id] || null));
  });
  document.getElementById('reviewed').textContent = s.reviewed;
  status.textContent = `saved: ${d} · ${sel ? 'object ' + sel : 'sample'}` + (note.value ? ' · note' : '');
  note.value = '';
}
document.querySelectorAll('button[data-d]').forEach(b => b.addEventListener('click', () => decide(b.dataset.d)));
function toggle(n) { const i = document.getElementById('layer-' + n); i.checked = !i.checked; show(); }
function show() {
  for (const n of ['disparity', 'depth', 'masks']) {
    document.getElementById('img-' + n).hidden = !document.getElementById('layer-' + n).checked;
  }
  document.getElementById('img-left').style.visibility =
    document.getElementById('layer-left').checked ? 'visible' : 'hidden';
}
document.querySelectorAll('.layers input').forEach(i => i.addEventListener('change', show));
const KEYS = {a: 'accept', r: 'reject', f: 'flag', u: 'clear'};
const LAYER = {'1': 'left', '2': 'disparity', '3': 'depth', '4': 'masks'};
document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target === note) { if (e.key === 'Enter' || e.key === 'Escape') note.blur(); return; }
  if (e.target.tagName === 'INPUT') return;
  if (KEYS[e.key]) { e.preventDefault(); decide(KEYS[e.key]); }
  else if (LAYER[e.key]) toggle(LAYER[e.key]);
  else if (e.key === 'Escape') select(null);
  else if (e.key === 'n') { e.preventDefault(); note.focus(); }
  else if ((e.key === 'j' || e.key === 'ArrowRight') && S.next) location.href = S.next;
  else if ((e.key === 'k' || e.key === 'ArrowLeft') && S.prev) location.href = S.prev;
  else if (e.key === 'b') location.href = S.back;
  else if (e.key === 'm') moreLikeThis();
  else if (e.key === 't' && sel && S.tracks[String(sel)] !== undefined) location.href = '/track/' + S.tracks[String(sel)];
  else if ((e.key === ']' || e.key === '[') && S.objects.length) {
    const k = S.objects.indexOf(sel), step = e.key === ']' ? 1 : -1;
    select(S.objects[(k < 0 ? (step > 0 ? 0 : S.objects.length - 1) : (k + step + S.objects.length) % S.objects.length)]);
  }
});

// "More like this": the nearest samples by embedding (or the nearest objects when one is selected).
async function moreLikeThis() {
  const box = document.getElementById('similar'), of = document.getElementById('similar-of');
  const url = '/api/similar/' + encodeURIComponent(S.sample_id) + (sel != null ? '?object=' + sel : '');
  const r = await fetch(url);
  const j = await r.json();
  of.textContent = sel != null ? 'objects like object ' + sel : 'samples like this one';
  if (!j.available) { box.textContent = j.hint; box.scrollIntoView({block: 'nearest'}); return; }
  box.replaceChildren(...j.items.map(it => {
    const a = document.createElement('a');
    a.href = '/sample/' + encodeURIComponent(it.sample_id) + '?' + S.query;
    a.className = 'similar';
    a.dataset.sample = it.sample_id;
    const img = document.createElement('img');
    img.src = '/thumb/' + encodeURIComponent(it.sample_id) + '.png';
    a.append(img, (it.object_id != null ? '#' + it.object_id + ' ' : '') + it.cosine.toFixed(3));
    a.title = it.sample_id;
    return a;
  }));
  box.scrollIntoView({block: 'nearest'});  // below a long object list the results would stay out of view
}
document.getElementById('more-like-this').addEventListener('click', moreLikeThis);
