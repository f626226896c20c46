// labeler review: a track's page (decisions on every frame of the track, keyboard navigation).
const T = JSON.parse(document.getElementById('data').textContent);
const status = document.getElementById('status'), note = document.getElementById('note');
function badge(d) {
  const s = document.createElement('span');
  s.className = 'badge' + (d ? ' ' + d : ''); s.textContent = d || 'undecided'; return s;
}
async function decide(d) {
  const body = {track_id: T.track_id, decision: d, note: note.value};
  status.textContent = 'saving…';
  const r = await fetch('/api/decide-track', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                              body: JSON.stringify(body)});
  if (!r.ok) { status.textContent = 'not saved: ' + (await r.text()); return; }
  const s = await r.json();
  document.querySelectorAll('figure.frame').forEach(f => {
    f.querySelector('.fdec').replaceChildren(badge(s.frames[f.dataset.sample] || null));
  });
  document.getElementById('reviewed').textContent = s.reviewed;
  const n = Object.keys(s.frames).length;
  status.textContent = `saved: ${d} · track ${T.track_id} · ${n} frame${n === 1 ? '' : 's'}` +
    (note.value ? ' · note' : '');
  note.value = '';
}
document.querySelectorAll('button[data-d]').forEach(b => b.addEventListener('click', () => decide(b.dataset.d)));
const KEYS = {a: 'accept', r: 'reject', f: 'flag', u: 'clear'};
document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target === note) { if (e.key === 'Enter' || e.key === 'Escape') note.blur(); return; }
  if (e.target.tagName === 'INPUT') return;
  if (KEYS[e.key]) { e.preventDefault(); decide(KEYS[e.key]); }
  else if (e.key === 'n') { e.preventDefault(); note.focus(); }
  else if ((e.key === 'j' || e.key === 'ArrowRight') && T.next) location.href = T.next;
  else if ((e.key === 'k' || e.key === 'ArrowLeft') && T.prev) location.href = T.prev;
  else if (e.key === 'b') location.href = T.back;
});
