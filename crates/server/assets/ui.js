// switchyard dashboard: live views of every rollout, drawn from the admin API.
//
// Plain JavaScript, no library, nothing loaded from elsewhere. Every second the current view's
// data is fetched from /admin/v1 (with the bearer token from sessionStorage when the gateway
// asks for one) and the view is rebuilt with DOM nodes; text only ever goes in as text nodes,
// never as HTML. Charts are SVG drawn by the small functions under "Charts".
'use strict';

(function () {
  const API = '/admin/v1';
  const POLL_MS = 1000;
  const TOKEN_KEY = 'switchyard.adminToken';
  const SVGNS = 'http://www.w3.org/2000/svg';
  const KIND_OF_VIEW = { shadow: 'shadow', ab: 'ab', canary: 'canary', bluegreen: 'blue_green' };
  const VIEW_OF_KIND = { shadow: 'shadow', ab: 'ab', bandit: 'ab', canary: 'canary', blue_green: 'bluegreen' };
  const KIND_LABEL = { shadow: 'shadow', ab: 'A/B', bandit: 'bandit', canary: 'canary', blue_green: 'blue-green' };
  // The A/B view also shows bandits.
  const KINDS_OF_VIEW = { ab: ['ab', 'bandit'] };
  // Arms of an A/B/n test or bandit: a, b, c, …
  const ARM_COLORS = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#db2777', '#0891b2', '#ca8a04', '#475569'];
  const armColor = (variant) => {
    const i = typeof variant === 'string' && variant.length === 1 ? variant.charCodeAt(0) - 97 : -1;
    return i >= 0 ? ARM_COLORS[i % ARM_COLORS.length] : COLOR.grey;
  };
  const TERMINAL = ['completed', 'rolled_back', 'aborted'];
  const COLOR = {
    current: '#2563eb', candidate: '#ea580c', blue: '#2563eb', green: '#16a34a',
    grey: '#64748b', red: '#dc2626',
  };
  // Audit events that come with an alert to the webhooks (the admin API has no alert log, so
  // the dashboard shows the trail's record of them).
  const ALERT_EVENTS = {
    rolled_back: ['rollback', 'critical'],
    srm_detected: ['sample-ratio mismatch', 'critical'],
    validation_failed: ['validation failed', 'critical'],
    step_stuck: ['step stuck', 'warning'],
    awaiting_approval: ['approval needed', 'info'],
    arm_stopped: ['guardrail breached', 'critical'],
  };
  const ACTIONS = [
    ['promote', 'Promote'], ['rollback', 'Roll back'], ['pause', 'Pause'],
    ['resume', 'Resume'], ['approve', 'Approve'],
  ];

  const state = {
    inflight: false, again: false, needToken: false, polls: 0, lastKey: null,
    rollouts: [], routes: null,
  };

  // -------------------------------------------------------------------------------------------
  // DOM helpers: strings become text nodes, never markup.

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else if (c instanceof Node) el.appendChild(c);
      else el.appendChild(document.createTextNode(String(c)));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return el;
  }

  function h(tag, attrs, ...children) {
    return append(setAttrs(document.createElement(tag), attrs), children);
  }

  function s(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS(SVGNS, tag), attrs), children);
  }

  const $ = (id) => document.getElementById(id);

  // -------------------------------------------------------------------------------------------
  // Formatting.

  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const pct = (x, d = 1) => (isNum(x) ? (x * 100).toFixed(d) + '%' : '—');
  const pts = (x, d = 2) => (isNum(x) ? (x >= 0 ? '+' : '') + (x * 100).toFixed(d) + ' pts' : '—');
  const ms = (x) => (isNum(x) ? x.toFixed(2) + ' ms' : '—');
  const int = (x) => (isNum(x) ? String(Math.round(x)) : '—');
  function pval(p) {
    if (!isNum(p)) return '—';
    if (p !== 0 && p < 1e-4) return p.toExponential(2);
    return p.toFixed(4);
  }
  function sig(x) {
    if (!isNum(x)) return x === null || x === undefined ? '—' : String(x);
    if (Number.isInteger(x)) return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
    return String(Number(x.toPrecision(4)));
  }
  function pad2(n) { return String(n).padStart(2, '0'); }
  function clock(ts, seconds = true) {
    if (!isNum(ts)) return '—';
    const d = new Date(ts);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (seconds ? ':' + pad2(d.getSeconds()) : '');
  }
  function when(ts) {
    if (!isNum(ts)) return '—';
    const d = new Date(ts);
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + clock(ts);
  }
  function duration(msv) {
    if (!isNum(msv)) return '—';
    if (msv < 1000) return msv + ' ms';
    if (msv < 120000) return Math.round(msv / 1000) + ' s';
    if (msv < 7200000) return Math.round(msv / 60000) + ' min';
    return Math.round(msv / 3600000) + ' h';
  }
  /** Decimals that tell ticks `step` apart. */
  function decimals(step) {
    if (!isNum(step) || step <= 0) return 2;
    let d = 0;
    while (d < 4 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6 * 10 ** d) d += 1;
    return d;
  }
  const pctTick = (v, step) => pct(v, step === undefined ? 0 : decimals(step * 100));
  const ptsTick = (v, step) => pts(v, step === undefined ? 1 : decimals(step * 100));
  const msTick = (v, step) => (step === undefined ? sig(v) : v.toFixed(decimals(step))) + ' ms';
  const phaseClass = (p) => 'badge phase-' + String(p || 'unknown').replace(/[^a-z_]/g, '');

  // -------------------------------------------------------------------------------------------
  // The admin API.

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, method) {
    const headers = { accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.authorization = 'Bearer ' + token;
    if (method === 'POST') headers['x-switchyard-actor'] = 'ui';
    const r = await fetch(API + path, {
      method: method || 'GET', headers, cache: 'no-store', credentials: 'same-origin',
      redirect: 'error',
    });
    if (r.status === 401) throw new AuthError('the admin API wants a bearer token');
    const text = await r.text();
    let body = null;
    try { body = JSON.parse(text); } catch (_) { body = text; }
    if (!r.ok) {
      const msg = body && body.error && body.error.message ? body.error.message : String(text);
      throw new ApiError(r.status, r.status + ': ' + msg);
    }
    return body;
  }

  const enc = encodeURIComponent;

  // -------------------------------------------------------------------------------------------
  // Routing: #/overview, #/shadow[/name], #/ab[/name], #/canary[/name], #/bluegreen[/name],
  // #/audit.

  function route() {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    let view = parts[0] || 'overview';
    if (!['overview', 'audit', ...Object.keys(KIND_OF_VIEW)].includes(view)) view = 'overview';
    let name = null;
    if (parts.length > 1 && parts[1]) {
      try { name = decodeURIComponent(parts.slice(1).join('/')); } catch (_) { name = null; }
    }
    return { view, name };
  }

  const isActive = (r) => !TERMINAL.includes(r.phase);

  /** Rollouts of a kind, the active ones first, then the latest started. */
  function ofKind(kind) {
    return state.rollouts
      .filter((r) => r.kind === kind)
      .sort((a, b) => (isActive(b) - isActive(a)) || (b.started_ms - a.started_ms)
        || String(a.name).localeCompare(String(b.name)));
  }

  // -------------------------------------------------------------------------------------------
  // Loading.

  async function loadView(rt) {
    if (rt.view === 'overview') {
      const events = await Promise.all(state.rollouts.map((r) =>
        api('/rollouts/' + enc(r.name) + '/events').then((e) => e.events, () => [])));
      const byName = {};
      state.rollouts.forEach((r, i) => { byName[r.name] = events[i]; });
      return { events: byName };
    }
    if (rt.view === 'audit') {
      const [verify, ...events] = await Promise.all([
        api('/audit/verify').catch(() => null),
        ...state.rollouts.map((r) => api('/rollouts/' + enc(r.name) + '/events')
          .then((e) => e.events.map((ev) => Object.assign({ rollout: r.name }, ev)), () => [])),
      ]);
      return { verify, events: events.flat().sort((a, b) => b.seq - a.seq) };
    }
    const list = (KINDS_OF_VIEW[rt.view] || [KIND_OF_VIEW[rt.view]]).flatMap(ofKind);
    const chosen = list.find((r) => r.name === rt.name) || list[0];
    if (!chosen) return { list, rollout: null };
    const [report, history] = await Promise.all([
      api('/rollouts/' + enc(chosen.name) + '/report?format=json'),
      api('/rollouts/' + enc(chosen.name) + '/history'),
    ]);
    return { list, rollout: chosen, report, history: history.points || [] };
  }

  async function refresh() {
    if (state.needToken) return;
    if (state.inflight) { state.again = true; return; }
    state.inflight = true;
    try {
      const rt = route();
      const [list, routes] = await Promise.all([api('/rollouts'), api('/routes')]);
      state.rollouts = list.rollouts || [];
      state.routes = routes;
      const data = await loadView(rt);
      const now = route();
      if (now.view === rt.view && now.name === rt.name) {
        const key = rt.view + '|' + rt.name + '|' + JSON.stringify(state.rollouts) + JSON.stringify(data);
        if (key !== state.lastKey) {
          state.lastKey = key;
          render(rt, data);
        }
      } else {
        state.again = true;
      }
      state.polls += 1;
      setLive(true, 'live · ' + clock(Date.now()));
    } catch (e) {
      if (e instanceof AuthError) askToken(sessionStorage.getItem(TOKEN_KEY)
        ? 'The token was refused. Enter a credential\'s bearer token.'
        : 'This gateway requires a credential\'s bearer token.');
      else setLive(false, 'offline · ' + (e && e.message ? e.message : String(e)));
    } finally {
      state.inflight = false;
      if (state.again) { state.again = false; setTimeout(refresh, 0); }
    }
  }

  function setLive(ok, text) {
    const el = $('live');
    el.textContent = text;
    el.className = ok ? 'live ok' : 'live bad';
    el.setAttribute('data-polls', String(state.polls));
  }

  // -------------------------------------------------------------------------------------------
  // Token prompt, confirmation, toast.

  function askToken(message) {
    state.needToken = true;
    state.lastKey = null;
    $('token-message').textContent = message;
    $('token-dialog').hidden = false;
    setLive(false, 'token needed');
    $('token-input').focus();
  }

  function setupToken() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const value = $('token-input').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $('token-input').value = '';
      $('token-dialog').hidden = true;
      state.needToken = false;
      refresh();
    });
    $('token-forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $('token-input').value = '';
      $('token-dialog').hidden = true;
      state.needToken = false;
      refresh();
    });
    $('token-button').addEventListener('click', () => {
      $('token-message').textContent = sessionStorage.getItem(TOKEN_KEY)
        ? 'A token is set for this tab. Enter another one, or forget it.'
        : 'No token is set for this tab.';
      $('token-dialog').hidden = false;
      $('token-input').focus();
    });
  }

  let confirmResolve = null;
  function confirmDialog(title, message, okLabel) {
    $('confirm-title').textContent = title;
    $('confirm-message').textContent = message;
    $('confirm-ok').textContent = okLabel;
    $('confirm-dialog').hidden = false;
    $('confirm-ok').focus();
    return new Promise((resolve) => { confirmResolve = resolve; });
  }
  function closeConfirm(answer) {
    $('confirm-dialog').hidden = true;
    if (confirmResolve) { const r = confirmResolve; confirmResolve = null; r(answer); }
  }

  let toastTimer = null;
  function toast(text, bad) {
    const el = $('toast');
    el.textContent = text;
    el.className = bad ? 'toast bad' : 'toast';
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // -------------------------------------------------------------------------------------------
  // Operator commands.

  function allowed(phase, action) {
    if (TERMINAL.includes(phase)) return false;
    if (action === 'resume') return phase === 'paused';
    if (action === 'pause') return phase !== 'paused';
    if (action === 'approve') return phase === 'awaiting_approval';
    return true;
  }

  async function command(r, action) {
    const [current, candidate] = [r.current, r.candidate];
    if (action === 'rollback' && !(await confirmDialog('Roll back ' + r.name + '?',
      'All traffic of ' + r.model + ' returns to ' + current + '. This ends the rollout.', 'Roll back'))) return;
    if (action === 'promote' && !(await confirmDialog('Promote ' + candidate + '?',
      candidate + ' will serve all traffic of ' + r.model + '. This ends ' + r.name + '.', 'Promote'))) return;
    try {
      const v = await api('/rollouts/' + enc(r.name) + '/' + action, 'POST');
      toast(r.name + ': ' + action + ' done, now ' + v.phase);
    } catch (e) {
      if (e instanceof AuthError) askToken('The admin API needs a bearer token for ' + action + '.');
      else toast(r.name + ': ' + action + ' refused: ' + e.message, true);
    }
    state.lastKey = null;
    refresh();
  }

  function actionBar(r) {
    return h('div', { class: 'actions' }, ACTIONS.map(([action, label]) => h('button', {
      type: 'button', class: action === 'rollback' ? 'danger' : action === 'promote' ? 'primary' : '',
      'data-action': action, 'data-rollout': r.name, disabled: !allowed(r.phase, action),
      onclick: () => command(r, action),
    }, label)));
  }

  // -------------------------------------------------------------------------------------------
  // Charts: SVG, scaled by viewBox.

  function extent(values) {
    let lo = Infinity; let hi = -Infinity;
    for (const v of values) if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return lo === Infinity ? null : [lo, hi];
  }

  function niceTicks(lo, hi, count) {
    if (lo === hi) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
    const start = Math.floor(lo / step + 1e-9) * step;
    const ticks = [];
    for (let v = start; v <= hi + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
    if (ticks.length < 2) ticks.push(start + step);
    return ticks;
  }

  function timeTicks(x0, x1) {
    const span = x1 - x0;
    const steps = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400]
      .map((x) => x * 1000);
    const step = steps.find((st) => span / st <= 5) || span / 4;
    const ticks = [];
    for (let v = Math.ceil(x0 / step) * step; v <= x1; v += step) ticks.push(v);
    return { ticks, seconds: step < 60000 };
  }

  const W = 560;
  const M = { l: 52, r: 16, t: 12, b: 26 };

  /**
   * A time-series line chart. `series`: [{name, color, points: [[ts, y], ...], dash}].
   * Options: yMin/yMax (always included), fmt (y labels), step (hold values), refs
   * ([{y, label}] dashed lines).
   */
  function lineChart(id, series, opt) {
    const o = Object.assign({ height: 190, fmt: sig }, opt || {});
    const H = o.height;
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, 'data-chart': id, role: 'img' });
    const clean = series.map((se) => Object.assign({}, se, {
      pts: se.points.filter((p) => isNum(p[0]) && isNum(p[1])),
    }));
    const all = clean.flatMap((se) => se.pts);
    if (!all.length) {
      svg.appendChild(s('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'no data yet'));
      return svg;
    }
    let [x0, x1] = extent(all.map((p) => p[0]));
    if (x0 === x1) { x0 -= 30000; x1 += 30000; }
    let [y0, y1] = extent(all.map((p) => p[1]).concat((o.refs || []).map((r) => r.y)));
    if (isNum(o.yMin)) y0 = Math.min(y0, o.yMin);
    if (isNum(o.yMax)) y1 = Math.max(y1, o.yMax);
    const yt = niceTicks(y0, y1, 4);
    y0 = yt[0]; y1 = yt[yt.length - 1];
    const X = (v) => M.l + ((v - x0) / (x1 - x0)) * (W - M.l - M.r);
    const Y = (v) => H - M.b - ((v - y0) / (y1 - y0 || 1)) * (H - M.t - M.b);
    const axis = s('g', { class: 'axis' });
    const ystep = yt.length > 1 ? yt[1] - yt[0] : 1;
    for (const t of yt) {
      axis.appendChild(s('line', { x1: M.l, x2: W - M.r, y1: Y(t), y2: Y(t), class: 'gridline' }));
      axis.appendChild(s('text', { x: M.l - 6, y: Y(t) + 4, 'text-anchor': 'end' }, o.fmt(t, ystep)));
    }
    const tt = timeTicks(x0, x1);
    for (const t of tt.ticks) {
      axis.appendChild(s('line', { x1: X(t), x2: X(t), y1: H - M.b, y2: H - M.b + 4, class: 'tick' }));
      axis.appendChild(s('text', { x: X(t), y: H - 8, 'text-anchor': 'middle' }, clock(t, tt.seconds)));
    }
    axis.appendChild(s('line', { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: 'base' }));
    svg.appendChild(axis);
    for (const r of o.refs || []) {
      svg.appendChild(s('line', { x1: M.l, x2: W - M.r, y1: Y(r.y), y2: Y(r.y), class: 'ref' }));
      if (r.label) svg.appendChild(s('text', { x: W - M.r - 2, y: Y(r.y) - 3, class: 'ref-label', 'text-anchor': 'end' }, r.label));
    }
    for (const se of clean) {
      if (!se.pts.length) continue;
      let d = '';
      se.pts.forEach((p, i) => {
        const x = X(p[0]).toFixed(1); const y = Y(p[1]).toFixed(1);
        if (i === 0) d += 'M' + x + ',' + y;
        else if (o.step) d += 'H' + x + 'V' + y;
        else d += 'L' + x + ',' + y;
      });
      svg.appendChild(s('path', {
        d, class: 'series', stroke: se.color, 'stroke-dasharray': se.dash || null,
        'data-series': se.name, 'data-points': se.pts.length,
      }));
      const last = se.pts[se.pts.length - 1];
      svg.appendChild(s('circle', { cx: X(last[0]), cy: Y(last[1]), r: 3.2, fill: se.color },
        s('title', {}, se.name + ': ' + o.fmt(last[1]) + ' at ' + when(last[0]))));
    }
    return svg;
  }

  /** Grouped bars: `groups` along x, one bar per series in each. */
  function barChart(id, groups, series, opt) {
    const o = Object.assign({ height: 190, fmt: sig }, opt || {});
    const H = o.height;
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, 'data-chart': id, role: 'img' });
    const values = series.flatMap((se) => se.values).filter(isNum);
    if (!values.length) {
      svg.appendChild(s('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'no data yet'));
      return svg;
    }
    const yt = niceTicks(0, Math.max(...values), 4);
    const y1 = yt[yt.length - 1];
    const Y = (v) => H - M.b - (v / y1) * (H - M.t - M.b);
    for (const t of yt) {
      svg.appendChild(s('line', { x1: M.l, x2: W - M.r, y1: Y(t), y2: Y(t), class: 'gridline' }));
      svg.appendChild(s('text', { x: M.l - 6, y: Y(t) + 4, 'text-anchor': 'end', class: 'axis-text' }, o.fmt(t, yt[1] - yt[0])));
    }
    const gw = (W - M.l - M.r) / groups.length;
    const bw = Math.min(46, (gw * 0.7) / series.length);
    groups.forEach((g, gi) => {
      const cx = M.l + gw * gi + gw / 2;
      svg.appendChild(s('text', { x: cx, y: H - 8, 'text-anchor': 'middle', class: 'axis-text' }, g));
      series.forEach((se, si) => {
        const v = se.values[gi];
        if (!isNum(v)) return;
        const x = cx - (bw * series.length) / 2 + bw * si;
        svg.appendChild(s('rect', {
          x: x + 1, y: Y(v), width: bw - 2, height: Math.max(0, H - M.b - Y(v)), fill: se.color,
          class: 'bar', 'data-series': se.name,
        }, s('title', {}, se.name + ' ' + g + ': ' + o.fmt(v))));
        svg.appendChild(s('text', { x: x + bw / 2, y: Y(v) - 4, 'text-anchor': 'middle', class: 'bar-label' }, o.fmt(v)));
      });
    });
    svg.appendChild(s('line', { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: 'base' }));
    return svg;
  }

  /** Horizontal progress bars: [{name, value, max, color}]. */
  function progressChart(id, rows, fmt) {
    const H = 30 + rows.length * 34;
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, 'data-chart': id, role: 'img' });
    const x0 = 120; const x1 = W - 70;
    rows.forEach((r, i) => {
      const y = 14 + i * 34;
      const frac = isNum(r.value) && isNum(r.max) && r.max > 0 ? Math.min(1, r.value / r.max) : 0;
      svg.appendChild(s('text', { x: x0 - 8, y: y + 15, 'text-anchor': 'end', class: 'axis-text' }, r.name));
      svg.appendChild(s('rect', { x: x0, y, width: x1 - x0, height: 20, class: 'track', rx: 3 }));
      svg.appendChild(s('rect', { x: x0, y, width: (x1 - x0) * frac, height: 20, fill: r.color, rx: 3, class: 'bar', 'data-series': r.name }));
      svg.appendChild(s('text', { x: x1 + 6, y: y + 15, class: 'axis-text' }, fmt(r)));
    });
    return svg;
  }

  /** A difference with its confidence interval, against zero. */
  function intervalChart(id, point, low, high, fmt) {
    const H = 96;
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, 'data-chart': id, role: 'img' });
    if (![point, low, high].every(isNum)) {
      svg.appendChild(s('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'no data yet'));
      return svg;
    }
    const ticks = niceTicks(Math.min(0, low), Math.max(0, high), 5);
    const lo = ticks[0]; const hi = ticks[ticks.length - 1];
    const X = (v) => 36 + ((v - lo) / (hi - lo)) * (W - 80);
    const y = 40;
    for (const t of ticks) {
      svg.appendChild(s('line', { x1: X(t), x2: X(t), y1: 14, y2: H - 26, class: 'gridline' }));
      svg.appendChild(s('text', { x: X(t), y: H - 8, 'text-anchor': 'middle', class: 'axis-text' }, fmt(t)));
    }
    svg.appendChild(s('line', { x1: X(0), x2: X(0), y1: 10, y2: H - 26, class: 'zero' }));
    svg.appendChild(s('line', { x1: X(low), x2: X(high), y1: y, y2: y, class: 'ci', 'data-series': 'ci' }));
    svg.appendChild(s('line', { x1: X(low), x2: X(low), y1: y - 8, y2: y + 8, class: 'ci' }));
    svg.appendChild(s('line', { x1: X(high), x2: X(high), y1: y - 8, y2: y + 8, class: 'ci' }));
    svg.appendChild(s('circle', { cx: X(point), cy: y, r: 5.5, fill: COLOR.candidate }));
    svg.appendChild(s('text', { x: X(point), y: y - 12, 'text-anchor': 'middle', class: 'bar-label' }, fmt(point)));
    return svg;
  }

  /** A thin bar of the traffic split: [{label, share (0..1), color}]. */
  function splitBar(parts) {
    const w = 160; const hgt = 12;
    const svg = s('svg', { class: 'split', viewBox: '0 0 ' + w + ' ' + hgt, width: w, height: hgt, role: 'img' });
    let x = 0;
    for (const p of parts) {
      const pw = Math.max(0, Math.min(1, p.share)) * w;
      svg.appendChild(s('rect', { x, y: 0, width: pw, height: hgt, fill: p.color },
        s('title', {}, p.label + ' ' + pct(p.share, 0))));
      x += pw;
    }
    if (x < w) svg.appendChild(s('rect', { x, y: 0, width: w - x, height: hgt, class: 'track' }));
    return svg;
  }

  function legend(series, fmt) {
    return h('div', { class: 'legend' }, series.map((se) => {
      const last = se.points && se.points.filter((p) => isNum(p[1])).pop();
      return h('span', { class: 'key' },
        s('svg', { width: 14, height: 10, viewBox: '0 0 14 10' },
          s('line', { x1: 0, x2: 14, y1: 5, y2: 5, stroke: se.color, 'stroke-width': 3, 'stroke-dasharray': se.dash || null })),
        ' ' + se.name, last ? h('b', {}, ' ' + (fmt || sig)(last[1])) : null);
    }));
  }

  // -------------------------------------------------------------------------------------------
  // Building blocks.

  function card(title, ...body) {
    return h('section', { class: 'card' }, h('h3', {}, title), body);
  }

  function chartCard(title, id, series, opt) {
    const fmt = (opt && opt.fmt) || sig;
    return card(title, lineChart(id, series, opt), legend(series, fmt));
  }

  function tile(label, value, opt) {
    const o = opt || {};
    return h('div', { class: 'tile' + (o.tone ? ' ' + o.tone : '') },
      h('div', { class: 'label' }, label),
      h('div', { class: String(value).length > 12 ? 'value long' : 'value', 'data-k': o.k || null }, value),
      o.sub ? h('div', { class: 'sub', 'data-k': o.k ? o.k + '-sub' : null }, o.sub) : null);
  }

  function table(head, rows, opt) {
    const o = opt || {};
    return h('div', { class: 'table-wrap' }, h('table', { 'data-k': o.k || null },
      h('thead', {}, h('tr', {}, head.map((c) => h('th', {}, c)))),
      h('tbody', {}, rows.length ? rows.map((r) => h('tr', {}, r.map((c) =>
        c instanceof Node ? h('td', {}, c) : h('td', {}, c === null || c === undefined ? '—' : c))))
        : h('tr', {}, h('td', { colspan: head.length, class: 'empty' }, o.empty || 'nothing yet')))));
  }

  function badge(text, cls) { return h('span', { class: 'badge ' + (cls || '') }, text); }

  function detailsChips(details) {
    const entries = Object.entries(details || {});
    if (!entries.length) return '';
    return h('span', { class: 'chips' }, entries.map(([k, v]) =>
      h('span', { class: 'chip' }, h('i', {}, k), ' ', typeof v === 'object' && v !== null ? JSON.stringify(v) : sig(v))));
  }

  function strategyText(st) {
    if (!st) return '—';
    switch (st.kind) {
      case 'single': return st.version + ' 100%';
      case 'shadow': return st.primary + ' 100% · mirrored to ' +
        st.shadows.map((x) => x.version + ' (' + (x.sample / 100) + '%)').join(', ');
      case 'split': return st.arms.slice().sort((a, b) => (b.variant === 'stable' || b.variant === 'a') - (a.variant === 'stable' || a.variant === 'a'))
        .map((a) => a.variant + ' ' + a.version + ' ' + (a.weight / 100) + '%').join(' · ');
      case 'blue_green': return st.active + ' (' + st[st.active] + ') 100% · ' +
        (st.active === 'blue' ? 'green (' + st.green + ')' : 'blue (' + st.blue + ')') + ' warm';
      default: return JSON.stringify(st);
    }
  }

  function strategyParts(st, current) {
    if (!st) return [];
    const colorOf = (version, variant) => {
      if (variant === 'blue') return COLOR.blue;
      if (variant === 'green') return COLOR.green;
      if (/^[c-z]$/.test(variant || '')) return armColor(variant);
      return version === current || variant === 'stable' || variant === 'a' ? COLOR.current : COLOR.candidate;
    };
    switch (st.kind) {
      case 'single': return [{ label: st.version, share: 1, color: colorOf(st.version) }];
      case 'shadow': return [{ label: st.primary, share: 1, color: COLOR.current }];
      case 'split': return st.arms.slice().sort((a, b) => (b.variant === 'stable' || b.variant === 'a') - (a.variant === 'stable' || a.variant === 'a'))
        .map((a) => ({ label: a.variant + ' ' + a.version, share: a.weight / 10000, color: colorOf(a.version, a.variant) }));
      case 'blue_green': return [{ label: st.active + ' ' + st[st.active], share: 1, color: colorOf(null, st.active) }];
      default: return [];
    }
  }

  function alertsOf(events, rollout) {
    return (events || []).filter((e) => ALERT_EVENTS[e.kind]).map((e) => ({
      label: ALERT_EVENTS[e.kind][0], tone: ALERT_EVENTS[e.kind][1], event: e, rollout,
    }));
  }

  // What each version serves and costs, and the candidate against the current version.
  function provenanceCard(report) {
    const prov = report.provenance || {};
    const names = Object.keys(prov);
    if (!names.length) return null;
    const artefact = (a) => !a ? '—' : a.kind === 'sha256' ? 'sha256:' + a.id.slice(0, 12)
      : a.kind === 'backend_version' ? 'backend:' + a.id : 'unknown';
    const rows = names.map((v) => [v, artefact(prov[v].artefact), prov[v].git_sha, prov[v].registry,
      isNum(prov[v].cost_per_1k) ? sig(prov[v].cost_per_1k) : null]);
    const c = report.cost || {};
    const times = (x) => (isNum(x) ? x.toFixed(2) + '×' : '—');
    const line = c.candidate ? h('p', { class: 'sub', 'data-k': 'cost' },
      c.candidate + ' vs ' + c.current + ': p95 ' + times(c.p95_ratio) +
      (isNum(c.accuracy_difference) ? ' · accuracy ' + (c.accuracy_difference >= 0 ? '+' : '') + (c.accuracy_difference * 100).toFixed(2) + ' points' : '') +
      (isNum(c.cost_ratio) ? ' · cost ' + times(c.cost_ratio) : '')) : null;
    return card('Provenance and cost', table(['version', 'artefact', 'git sha', 'registry', 'cost /1k'], rows, { k: 'provenance' }), line);
  }

  function eventsTable(events, withRollout) {
    const head = ['#', 'time', withRollout ? 'rollout' : null, 'event', 'by', 'message', 'numbers'].filter(Boolean);
    const rows = events.map((e) => [
      String(e.seq), when(e.ts_ms), withRollout ? e.rollout : null,
      badge(e.kind, ALERT_EVENTS[e.kind] ? 'tone-' + ALERT_EVENTS[e.kind][1] : 'ev'),
      e.actor, e.message, detailsChips(e.details),
    ].filter((c) => c !== null));
    return table(head, rows, { k: 'events', empty: 'no events' });
  }

  function rolloutHead(r) {
    const rec = r.recommendation;
    return h('div', { class: 'rollout-head' },
      h('div', { class: 'title' },
        h('h1', { 'data-k': 'name' }, r.name),
        h('div', { class: 'sub' }, KIND_LABEL[r.kind] + ' of ', h('b', {}, r.model), ' · ',
          h('span', { class: 'v-current' }, r.current), r.arms && r.arms.length ? ' (control) vs ' : ' → ',
          h('span', { class: 'v-candidate' }, r.arms && r.arms.length ? r.arms.slice(1).join(', ') : r.candidate),
          ' · started ' + when(r.started_ms))),
      h('div', { class: 'state' },
        h('span', { class: phaseClass(r.phase), 'data-k': 'phase' }, r.phase),
        rec ? h('span', { class: 'badge rec rec-' + String(rec).toLowerCase(), 'data-k': 'recommendation' }, rec) : null),
      actionBar(r),
      r.reason ? h('p', { class: 'reason', 'data-k': 'reason' }, r.reason) : null,
      approvals(r));
  }

  // Who approved so far, when what the rollout waits for needs several approvers.
  function approvals(r) {
    const by = r.approved_by || [];
    const asked = r.promote_requested_by || [];
    if (r.approvals_needed && (r.approvals_needed > 1 || by.length)) {
      return h('p', { class: 'reason', 'data-k': 'approvals' }, 'approvals: ' +
        (by.length ? by.join(', ') : 'none yet') + ' (' + by.length + ' of ' + r.approvals_needed + ')');
    }
    if (asked.length) {
      return h('p', { class: 'reason', 'data-k': 'approvals' }, 'promotion asked by ' + asked.join(', '));
    }
    return null;
  }

  function pills(list, chosen, view) {
    if (list.length < 2) return null;
    return h('nav', { class: 'pills', 'aria-label': 'rollouts' }, list.map((r) => h('a', {
      href: '#/' + view + '/' + enc(r.name), class: r.name === chosen.name ? 'pill on' : 'pill',
    }, r.name, ' ', h('span', { class: phaseClass(r.phase) }, r.phase))));
  }

  const series = (points, name, color, get, dash) => ({
    name, color, dash, points: points.map((p) => [p.ts_ms, get(p)]),
  });
  const vstat = (p, v, key) => (p.versions && p.versions[v] ? p.versions[v][key] : null);

  function versionsTable(rows) {
    const regression = rows.some(([, , st]) => st && isNum(st.mae));
    const lat = (st) => (st && isNum(st.p50_ms) ? [st.p50_ms, st.p95_ms, st.p99_ms].map((x) => (isNum(x) ? x.toFixed(1) : '—')).join(' / ') + ' ms' : '—');
    return table(['version', 'role', 'requests', 'errors', 'p50 / p95 / p99', 'labelled', regression ? 'MAE' : 'accuracy'],
      rows.map(([v, role, st]) => [
        v, role, int(st && st.requests),
        st && isNum(st.errors) ? st.errors + ' (' + pct(st.error_rate, 2) + ')' : '—', lat(st),
        int(st && st.labelled), regression ? sig(st && st.mae) : pct(st && st.accuracy),
      ]), { k: 'versions' });
  }

  // -------------------------------------------------------------------------------------------
  // Views.

  function renderOverview(data) {
    const rs = state.rollouts.slice().sort((a, b) => (isActive(b) - isActive(a)) || (b.started_ms - a.started_ms));
    const routes = (state.routes && state.routes.routes) || {};
    const models = Object.keys(routes).sort();
    const alerts = rs.flatMap((r) => alertsOf(data.events[r.name], r.name));
    const active = rs.filter(isActive);
    const out = [
      h('div', { class: 'tiles' },
        tile('rollouts', String(rs.length), { k: 'rollout-count', sub: active.length + ' active' }),
        tile('models', String(models.length), { k: 'model-count' }),
        tile('alerts raised', String(alerts.length), { k: 'alert-count', tone: alerts.some((a) => a.tone === 'critical') ? 'bad' : null }),
        tile('routing epoch', String(state.routes ? state.routes.epoch : '—'), { k: 'epoch' })),
    ];
    out.push(card('Rollouts', table(
      ['rollout', 'model', 'kind', 'versions', 'phase', 'traffic split', 'last event', 'alerts'],
      rs.map((r) => {
        const evs = data.events[r.name] || [];
        const last = evs[evs.length - 1];
        const al = alertsOf(evs);
        return [
          h('a', { href: '#/' + VIEW_OF_KIND[r.kind] + '/' + enc(r.name), 'data-rollout': r.name }, r.name),
          r.model, KIND_LABEL[r.kind] || r.kind, r.arms && r.arms.length ? armsOf(r).join(' · ') : r.current + ' → ' + r.candidate,
          h('span', { class: phaseClass(r.phase), 'data-k': 'phase' }, r.phase),
          h('span', { class: 'split-cell' }, splitBar(strategyParts(r.strategy, r.current)), h('small', {}, strategyText(r.strategy))),
          last ? h('span', {}, badge(last.kind, 'ev'), ' ', last.message, h('small', { class: 'muted' }, ' · ' + when(last.ts_ms))) : '—',
          al.length ? h('span', { 'data-k': 'alerts' }, al.map((a) => badge(a.label, 'tone-' + a.tone))) : h('span', { class: 'muted', 'data-k': 'alerts' }, 'none'),
        ];
      }), { k: 'rollouts', empty: 'no rollouts yet: apply one with switchyard apply -f rollout.yaml' })));
    out.push(card('Models', table(['model', 'serving now', 'split', 'active rollout'], models.map((m) => {
      const st = routes[m].strategy;
      const act = active.find((r) => r.model === m);
      return [m, strategyText(st), splitBar(strategyParts(st, act ? act.current : null)),
        act ? h('a', { href: '#/' + VIEW_OF_KIND[act.kind] + '/' + enc(act.name) }, act.name) : '—'];
    }), { k: 'models' })));
    if (alerts.length) {
      out.push(card('Alerts', table(['time', 'rollout', 'alert', 'message'],
        alerts.sort((a, b) => b.event.seq - a.event.seq).map((a) => [when(a.event.ts_ms), a.rollout,
          badge(a.label, 'tone-' + a.tone), a.event.message]), { k: 'alerts' })));
    }
    return out;
  }

  function emptyKind(view) {
    return [card('No ' + KIND_LABEL[KIND_OF_VIEW[view]] + ' rollouts',
      h('p', { class: 'muted' }, 'None has been applied to this gateway yet.'))];
  }

  function renderShadow(data) {
    const { rollout: r, report, history } = data;
    const a = (report.analysis || {}).shadow || {};
    const sh = a.report || {};
    const mc = sh.mcnemar || {};
    const primary = r.current; const cand = r.candidate;
    const out = [rolloutHead(r)];
    const reg = isNum(sh.primary_mae) || isNum(sh.shadow_mae);
    out.push(h('div', { class: 'tiles' },
      tile('agreement', pct(sh.agreement), { k: 'agreement', sub: int(sh.compared) + ' requests compared' }),
      reg ? tile('production MAE · ' + primary, sig(sh.primary_mae), { k: 'primary-mae' })
        : tile('production accuracy · ' + primary, pct(sh.primary_accuracy), { k: 'primary-accuracy', sub: int(sh.labelled) + ' labelled pairs' }),
      reg ? tile('shadow MAE · ' + cand, sig(sh.shadow_mae), { k: 'shadow-mae' })
        : tile('shadow accuracy · ' + cand, pct(sh.shadow_accuracy), { k: 'shadow-accuracy', sub: pts(sh.accuracy_difference) }),
      tile('McNemar p', pval(mc.p_value), {
        k: 'mcnemar-p',
        sub: 'χ² ' + sig(mc.statistic) + ' · b ' + int(mc.b) + ' / c ' + int(mc.c) + ' · exact p ' + pval(mc.exact_p_value),
      }),
      tile('recommendation', sh.recommendation || '—', {
        k: 'shadow-recommendation', sub: sh.reason || '',
        tone: sh.recommendation === 'PROMOTE' ? 'good' : sh.recommendation === 'REJECT' ? 'bad' : null,
      }),
      driftTile(sh.drift, 'psi', 'prediction drift (PSI) · ' + cand + ' vs ' + primary),
      sh.prediction_chi2 ? tile('χ² of the predictions', pval(sh.prediction_chi2.p_value), {
        k: 'prediction-chi2', sub: 'χ² ' + sig(sh.prediction_chi2.statistic) + ' · dof ' + int(sh.prediction_chi2.dof) + ' (as the seed; not paired)',
      }) : null));
    const pairPts = history.filter((p) => p.pair);
    const gain = (p) => (p.pair.labelled > 0 ? (p.pair.c - p.pair.b) / p.pair.labelled : null);
    const lat = { primary: a.primary_stats, shadow: a.shadow_stats };
    const grid = h('div', { class: 'grid' },
      chartCard('Agreement rate over time', 'agreement', [
        series(pairPts, 'agreement ' + primary + ' vs ' + cand, COLOR.current, (p) => p.pair.agreement),
      ], { fmt: pctTick, yMax: 1 }),
      chartCard('Accuracy: shadow minus production (labelled pairs)', 'gain', [
        series(pairPts, cand + ' − ' + primary, COLOR.candidate, gain),
      ], { fmt: ptsTick, refs: [{ y: 0, label: 'no difference' }] }),
      card('Latency: production vs shadow', barChart('latency', ['p50', 'p95', 'p99'], [
        { name: primary + ' (production)', color: COLOR.current, values: [lat.primary?.p50_ms, lat.primary?.p95_ms, lat.primary?.p99_ms] },
        { name: cand + ' (shadow)', color: COLOR.candidate, values: [lat.shadow?.p50_ms, lat.shadow?.p95_ms, lat.shadow?.p99_ms] },
      ], { fmt: msTick }), legend([
        { name: primary + ' (production)', color: COLOR.current }, { name: cand + ' (shadow)', color: COLOR.candidate },
      ])),
      card('Production and shadow', versionsTable([
        [primary, 'production', (report.versions || {})[primary]],
        [cand, 'shadow', a.shadow_stats],
      ])));
    out.push(grid);
    const classes = classCards(primary, cand, sh.transitions, a.primary_stats, a.shadow_stats);
    if (classes.length) out.push(h('div', { class: 'grid' }, classes));
    const cases = a.disagreements || [];
    out.push(card('Disagreements (' + cases.length + ' most recent)', table(
      ['request', 'input', primary + ' says', cand + ' says', 'truth'],
      cases.map((c) => {
        const truth = answer(c.truth);
        const mark = (x) => h('span', { class: truth === '—' ? '' : x === truth ? 'right' : 'wrong' }, x);
        return [h('code', {}, c.request_id), h('code', { class: 'input' }, inputText(c.input)),
          mark(answer(c.primary)), mark(answer(c.shadow)), truth];
      }), { k: 'disagreements', empty: 'no disagreements recorded' })));
    for (const c of segmentCards(sh.segments, primary, cand)) out.push(c);
    out.push(provenanceCard(report));
    out.push(card('Events', eventsTable(report.events || [])));
    return out;
  }

  /** One card per segment field: each value's two numbers, the change and its p-value. */
  function segmentCards(breakdowns, baseline, cand) {
    return (breakdowns || []).map((b) => {
      const acc = b.metric === 'accuracy';
      const val = (v) => (acc ? pct(v) : sig(v));
      const chg = (c) => (!isNum(c) ? '—' : acc ? pts(c, 1) : (c > 0 ? '+' : '') + (c * 100).toFixed(1) + '%');
      const rows = b.rows.concat([b.overall]).map((r) => {
        const tone = r.direction === 'worse' ? 'wrong' : r.direction === 'better' ? 'right' : '';
        return [h('b', {}, r.value), int(r.samples), val(r.baseline), val(r.candidate),
          h('span', { class: tone }, chg(r.change)), pval(r.p_value)];
      });
      const metric = acc ? 'accuracy' : 'MAE';
      const pair = b.compared ? b.compared.split(' vs ') : [cand, baseline];
      return card('Segments: ' + b.field + (b.compared ? ', ' + b.compared : '') + ' (' + b.values + ' values)',
        table([b.field, 'labelled', pair[1] + ' ' + metric, pair[0] + ' ' + metric, 'change', 'p'], rows, { k: 'segments-' + b.field + (b.compared ? '-' + pair[0] : '') }),
        b.reversal ? h('p', { class: 'muted', 'data-k': 'reversal-' + b.field }, '⚠ ' + b.reversal.summary) : null);
    });
  }

  /** The drift tile: PSI, with the JS distance and what it was computed over. */
  function driftTile(d, k, label) {
    if (!d) return null;
    const over = d.basis === 'values' ? d.bins.length + ' value deciles' : d.bins.length + ' classes';
    return tile(label, isNum(d.psi) ? d.psi.toFixed(3) : '—', {
      k: k, sub: 'JS distance ' + (isNum(d.js_distance) ? d.js_distance.toFixed(3) : '—') + ' · over ' + over,
      tone: isNum(d.psi) && d.psi > 0.25 ? 'bad' : null,
    });
  }

  /** A table of counts by class (`other` last when the classes overflowed). */
  function classTable(t, corner, k) {
    const labels = t.classes.concat(t.other ? ['(other)'] : []);
    return table([corner].concat(labels), labels.map((l, i) => [h('b', {}, l)].concat(t.counts[i].map((c) => String(c)))), { k: k });
  }

  /** Transitions and per-class scores of a shadow's two classifiers. */
  function classCards(primary, cand, transitions, pst, sst) {
    const out = [];
    if (transitions) {
      out.push(card('Transitions: ' + primary + ' (rows) → ' + cand + ' (columns)',
        classTable(transitions, primary + ' \\ ' + cand, 'transitions')));
    }
    const pc = pst && pst.classification; const sc = sst && sst.classification;
    if (pc || sc) {
      const names = [];
      for (const c of [pc, sc]) for (const x of (c ? c.scores : [])) if (!names.includes(x.class)) names.push(x.class);
      const score = (c, n) => (c ? c.scores.find((x) => x.class === n) : null);
      const f = (x) => (x && isNum(x) ? x.toFixed(3) : '—');
      const rows = names.map((n) => {
        const a = score(pc, n); const b = score(sc, n);
        return [h('b', {}, n), f(a && a.precision), f(a && a.recall), f(a && a.f1), f(b && b.precision), f(b && b.recall), f(b && b.f1), int((a || b).support)];
      });
      rows.push([h('b', {}, 'macro'), f(pc && pc.macro_precision), f(pc && pc.macro_recall), f(pc && pc.macro_f1),
        f(sc && sc.macro_precision), f(sc && sc.macro_recall), f(sc && sc.macro_f1), int(pc ? pc.labelled : sc.labelled)]);
      const unknown = Math.max(pc ? pc.unknown_labels : 0, sc ? sc.unknown_labels : 0);
      out.push(card('Per-class precision / recall / F1',
        table(['class', primary + ' P', primary + ' R', primary + ' F1', cand + ' P', cand + ' R', cand + ' F1', 'support'], rows, { k: 'class-scores' }),
        h('p', { class: 'muted', 'data-k': 'class-accuracy' },
          primary + ' accuracy ' + pct(pc && pc.accuracy) + ' [' + pct(pc && pc.accuracy_low) + ', ' + pct(pc && pc.accuracy_high) + '] · ' +
          cand + ' accuracy ' + pct(sc && sc.accuracy) + ' [' + pct(sc && sc.accuracy_low) + ', ' + pct(sc && sc.accuracy_high) + '] (95% Wilson)' +
          (unknown > 0 ? ' · ' + unknown + ' labels of undeclared classes left out' : ''))));
    }
    return out;
  }

  function answer(v) {
    if (v === null || v === undefined) return '—';
    if (Array.isArray(v)) return v.map((x) => (isNum(x) ? sig(x) : String(x))).join(', ');
    return String(v);
  }

  function inputText(input) {
    if (input === null || input === undefined) return '(not captured)';
    let text;
    const data = input && input.inputs && input.inputs[0] && input.inputs[0].data;
    if (Array.isArray(data)) text = '[' + data.map((x) => (isNum(x) ? sig(x) : JSON.stringify(x))).join(', ') + ']';
    else text = JSON.stringify(input);
    return text.length > 200 ? text.slice(0, 199) + '…' : text;
  }

  function renderCanary(data) {
    const { rollout: r, report, history } = data;
    const a = (report.analysis || {}).canary || {};
    const steps = a.steps || [];
    const stable = r.current; const cand = r.candidate;
    const vs = report.versions || {};
    const st = vs[stable] || {}; const ca = vs[cand] || {};
    const arms = r.strategy && r.strategy.kind === 'split' ? r.strategy.arms : [];
    const arm = arms.find((x) => x.version === cand);
    const weight = arm ? arm.weight / 100 : r.strategy && r.strategy.kind === 'single' && r.strategy.version === cand ? 100 : 0;
    const gates = (report.events || []).filter((e) => e.kind === 'gate_passed' || e.kind === 'gate_failed');
    // History is sampled while a rollout runs; a finished one ends where its last event put it.
    const lastEvent = (report.events || []).slice(-1)[0];
    const weightPoints = series(history, cand + ' share of traffic', COLOR.candidate, (p) => p.candidate_percent);
    if (TERMINAL.includes(r.phase) && lastEvent) weightPoints.points.push([lastEvent.ts_ms, weight]);
    const out = [rolloutHead(r)];
    out.push(h('div', { class: 'tiles' },
      tile('canary weight', weight + '%', { k: 'weight', sub: 'step ' + r.step + ' of ' + steps.length }),
      tile('accuracy · stable ' + stable, pct(st.accuracy), { k: 'stable-accuracy', sub: int(st.labelled) + ' labelled' }),
      tile('accuracy · canary ' + cand, pct(ca.accuracy), {
        k: 'canary-accuracy', sub: isNum(st.accuracy) && isNum(ca.accuracy) ? pts(ca.accuracy - st.accuracy, 1) + ' vs stable' : int(ca.labelled) + ' labelled',
      }),
      tile('p95 · stable / canary', ms(st.p95_ms) + ' / ' + ms(ca.p95_ms), { k: 'p95', sub: 'p99 ' + ms(st.p99_ms) + ' / ' + ms(ca.p99_ms) }),
      tile('error rate · stable / canary', pct(st.error_rate, 2) + ' / ' + pct(ca.error_rate, 2), { k: 'error-rate' }),
      driftTile(a.drift, 'canary-psi', 'prediction drift (PSI) · canary vs stable, rollout'),
      tile('gate verdicts', gates.filter((g) => g.kind === 'gate_passed').length + ' passed · ' +
        gates.filter((g) => g.kind === 'gate_failed').length + ' failed', {
        k: 'gates', tone: gates.some((g) => g.kind === 'gate_failed') ? 'bad' : null,
      })));
    out.push(h('div', { class: 'grid' },
      chartCard('Canary weight over time', 'weight', [weightPoints], { step: true, yMin: 0, yMax: 100, fmt: (v, st) => (st === undefined ? sig(v) : v.toFixed(decimals(st))) + '%', refs: steps.map((x) => ({ y: x.percent, label: x.percent + '%' })) }),
      chartCard('Accuracy: stable vs canary', 'accuracy', [
        series(history, stable + ' (stable)', COLOR.current, (p) => vstat(p, stable, 'accuracy')),
        series(history, cand + ' (canary)', COLOR.candidate, (p) => vstat(p, cand, 'accuracy')),
      ], { fmt: pctTick }),
      chartCard('Latency p50 / p95 / p99', 'latency', [
        series(history, stable + ' p50', COLOR.current, (p) => vstat(p, stable, 'p50_ms'), '2 3'),
        series(history, stable + ' p95', COLOR.current, (p) => vstat(p, stable, 'p95_ms')),
        series(history, stable + ' p99', COLOR.current, (p) => vstat(p, stable, 'p99_ms'), '8 3'),
        series(history, cand + ' p50', COLOR.candidate, (p) => vstat(p, cand, 'p50_ms'), '2 3'),
        series(history, cand + ' p95', COLOR.candidate, (p) => vstat(p, cand, 'p95_ms')),
        series(history, cand + ' p99', COLOR.candidate, (p) => vstat(p, cand, 'p99_ms'), '8 3'),
      ], { fmt: msTick, yMin: 0 }),
      chartCard('Error rate', 'errors', [
        series(history, stable + ' (stable)', COLOR.current, (p) => vstat(p, stable, 'error_rate')),
        series(history, cand + ' (canary)', COLOR.candidate, (p) => vstat(p, cand, 'error_rate')),
      ], { fmt: pctTick, yMin: 0, yMax: 0.02 })));
    out.push(card('Stable and canary', versionsTable([[stable, 'stable', st], [cand, 'canary', ca]])));
    out.push(card('Steps', table(['step', 'canary weight', 'min requests', 'min duration', 'approval', 'status'],
      steps.map((x, i) => {
        const n = i + 1;
        const status = TERMINAL.includes(r.phase)
          ? (n < r.step ? 'passed' : n === r.step ? r.phase : '—')
          : (n < r.step ? 'passed' : n === r.step ? 'current' : 'pending');
        return [String(n), x.percent + '%', int(x.min_requests), duration(x.min_duration_ms), x.require_approval ? 'required' : '—',
          status === '—' ? '—' : badge(status, 'phase-' + (status === 'current' ? 'running' : status === 'passed' ? 'completed' : status === 'pending' ? 'none' : status))];
      }), { k: 'steps' })));
    out.push(card('Gate verdicts', table(
      ['time', 'step', 'verdict', 'canary acc.', 'stable acc.', 'canary p95', 'stable p95', 'canary errors', 'stable errors', 'PSI', 'message'],
      gates.map((g) => {
        const d = g.details || {};
        const us = (x) => (isNum(x) ? ms(x / 1000) : '—');
        const step = (g.message.match(/step (\d+)/) || [])[1];
        const stepText = (step ? 'step ' + step : '—') + (isNum(d.step_percent) ? ' (' + sig(d.step_percent) + '%)' : '');
        return [when(g.ts_ms), stepText,
          badge(g.kind === 'gate_passed' ? 'passed' : 'failed', g.kind === 'gate_passed' ? 'phase-completed' : 'phase-rolled_back'),
          pct(d.canary_accuracy), pct(d.stable_accuracy), us(d.canary_p95_us), us(d.stable_p95_us),
          pct(d.canary_error_rate, 2), pct(d.stable_error_rate, 2), isNum(d.psi) ? d.psi.toFixed(3) : '—', g.message];
      }), { k: 'gates', empty: 'no gate evaluated yet' })));
    for (const c of segmentCards(a.segments, stable, cand)) out.push(c);
    out.push(provenanceCard(report));
    out.push(card('Events', eventsTable(report.events || [])));
    return out;
  }

  /** The arms' versions (control first) of an A/B/n rollout view, else its two. */
  function armsOf(r) {
    return r.arms && r.arms.length ? r.arms : [r.current, r.candidate];
  }

  function guardrailText(g) {
    const lim = g.limit || {};
    const [kind, x] = Object.entries(lim)[0] || ['', null];
    const limit = { max: '≤ ' + sig(x), min: '≥ ' + sig(x), max_increase: '≤ control +' + pct(x), max_decrease: '≥ control −' + pct(x) }[kind] || '';
    return g.metric + ' ' + sig(g.value) + ' (' + limit + ', n ' + int(g.samples) + ')' + (g.breached ? ' BREACHED' : '');
  }

  /** An A/B/n test or bandit: every arm against the control. */
  function renderAbn(data, a) {
    const { rollout: r, report, history } = data;
    const n = a.abn;
    const arms = n.arms || [];
    const proportion = arms.some((x) => isNum(x.successes));
    const val = (v) => (proportion ? pct(v, 2) : sig(v));
    const dif = (v) => (proportion ? pts(v, 2) : (isNum(v) ? (v >= 0 ? '+' : '') + sig(v) : '—'));
    const ci = (lo, hi) => (isNum(lo) && isNum(hi) ? '[' + dif(lo) + ', ' + dif(hi) + ']' : '—');
    const obs = a.observed_split || {};
    const total = arms.reduce((acc, x) => acc + (obs[x.variant] || 0), 0);
    const srm = n.srm || null;
    const outcome = n.outcome || {};
    const control = arms.length ? arms[0].version : r.current;
    const ranks = n.test === 'mann_whitney';
    const testName = { z_test: 'z-test', welch: 'Welch t', mann_whitney: 'Mann-Whitney U' }[n.test] || n.test || '';
    const outcomeText = outcome.outcome === 'winner' ? outcome.version + ' wins'
      : outcome.outcome === 'control_wins' ? control + ' (control) wins' : 'no significant difference (yet)';
    const out = [rolloutHead(r)];
    out.push(h('div', { class: 'tiles' },
      tile('arms', String(arms.length), { k: 'arm-count', sub: arms.map((x) => x.variant + ' ' + x.version).join(' · ') }),
      tile('primary metric', n.metric, { k: 'metric', sub: (n.lower_is_better ? 'lower' : 'higher') + ' is better' + (n.bandit ? ' · Thompson sampling' : ' · ' + n.correction + ', α ' + n.alpha) }),
      tile('test per variant', testName, { k: 'test', sub: ranks ? 'effect: P(arm > control) + ½ P(tie)' : '' }),
      tile('sample-ratio mismatch', srm ? (srm.mismatch ? 'MISMATCH' : 'ok') : '—', {
        k: 'srm', sub: srm ? 'χ² ' + sig(srm.statistic) + ' over ' + (srm.dof + 1) + ' arms, p = ' + pval(srm.p_value) : '',
        tone: srm && srm.mismatch ? 'bad' : srm ? 'good' : null,
      }),
      tile('outcome', outcomeText, { k: 'outcome', tone: outcome.outcome === 'winner' ? 'good' : null,
        sub: isNum(n.required_per_arm) ? 'required per arm: ' + n.required_per_arm : (n.bandit ? 'bandit' : '') }),
      tile('stopped arms', String(arms.filter((x) => x.decision === 'stopped').length), { k: 'stopped-count',
        tone: arms.some((x) => x.decision === 'stopped') ? 'bad' : null })));
    const head = ['arm', 'version', 'weight', 'observed', 'n', n.metric, ranks ? 'diff of means vs control' : 'diff vs control']
      .concat(ranks ? ['U', 'P(arm > control)', 'values ranked'] : [Math.round((1 - n.alpha) * 100) + '% CI'])
      .concat(['p', n.sequential ? 'adjusted always-valid p' : 'adjusted p']);
    if (n.sequential) head.push('always-valid p', 'confidence sequence');
    if (n.bandit) head.push('P(best)');
    head.push('guardrails', 'decision');
    const rows = arms.map((x) => {
      const row = [x.variant, x.version, pct(x.weight_percent / 100, 1),
        total ? pct((obs[x.variant] || 0) / total, 1) : '—', int(x.samples), val(x.value),
        x.decision === 'control' ? '—' : dif(x.diff)];
      if (ranks) {
        row.push(isNum(x.statistic) ? sig(x.statistic) : '—', isNum(x.common_language) ? x.common_language.toFixed(3) : '—',
          x.ranked ? int(x.ranked[0]) + ' vs ' + int(x.ranked[1]) : '—');
      } else {
        row.push(ci(x.ci_low, x.ci_high));
      }
      row.push(pval(x.p_value), pval(x.adjusted_p_value));
      if (n.sequential) row.push(pval(x.sequential_p_value), ci(x.cs_low, x.cs_high));
      if (n.bandit) row.push(isNum(x.p_best) ? x.p_best.toFixed(3) : '—');
      row.push((x.guardrails || []).length ? h('span', { title: x.stopped || '' }, x.guardrails.map(guardrailText).join('; ')) : '—');
      row.push(h('span', { 'data-k': 'decision', 'data-arm': x.version }, badge(x.decision, 'dec-' + x.decision)));
      return row;
    });
    out.push(card('Arms: each variant against the control', table(head, rows, { k: 'arms' }),
      arms.filter((x) => x.stopped).map((x) => h('p', { class: 'muted', 'data-k': 'stopped' }, x.variant + ' (' + x.version + ') stopped: ' + x.stopped))));
    const withArms = history.filter((p) => p.ab && p.ab.arms && p.ab.arms.length);
    const rw = (n.reweightings || []).filter((x) => Object.keys(x.weight_percent || {}).length);
    out.push(h('div', { class: 'grid' },
      card('Traffic split per arm',
        h('div', { class: 'splits' },
          h('div', {}, h('small', {}, 'weights now'), splitBar(arms.map((x) => ({ label: x.variant + ' ' + x.version, share: x.weight_percent / 100, color: armColor(x.variant) })))),
          h('div', {}, h('small', {}, 'observed over the test'), splitBar(total ? arms.map((x) => ({ label: x.variant + ' ' + x.version, share: (obs[x.variant] || 0) / total, color: armColor(x.variant) })) : []))),
        legend(arms.map((x) => ({ name: x.variant + ' ' + x.version, color: armColor(x.variant), points: [[0, x.weight_percent]] })), (v) => sig(v) + '%')),
      chartCard('Weights over time', 'weights', arms.map((x, i) => series(withArms, x.variant + ' ' + x.version, armColor(x.variant),
        (p) => (p.ab.arms[i] ? p.ab.arms[i].weight_percent : null))), { step: true, yMin: 0, yMax: 100, fmt: (v) => sig(v) + '%' }),
      chartCard(n.metric + ' per arm over time', 'metric', arms.map((x, i) => series(withArms, x.variant + ' ' + x.version, armColor(x.variant),
        (p) => (p.ab.arms[i] ? p.ab.arms[i].value : null))), { fmt: proportion ? pctTick : sig }),
      n.bandit ? chartCard('P(best) over time', 'p-best', arms.map((x, i) => series(withArms, x.variant + ' ' + x.version, armColor(x.variant),
        (p) => (p.ab.arms[i] ? p.ab.arms[i].p_best : null))), { yMin: 0, yMax: 1, fmt: (v) => v.toFixed(2) }) : null,
      card('Sample size per arm' + (isNum(n.required_per_arm) ? ' (' + n.required_per_arm + ' required)' : ''),
        progressChart('sample', arms.map((x) => ({ name: x.variant + ' ' + x.version, value: x.samples, max: isNum(n.required_per_arm) ? n.required_per_arm : Math.max(1, ...arms.map((y) => y.samples)), color: armColor(x.variant) })),
          (row) => int(row.value) + (isNum(n.required_per_arm) ? ' / ' + n.required_per_arm : '')))));
    if (rw.length) {
      out.push(card('Re-weightings (Thompson sampling)', table(['time', 'weights', 'P(best)', 'keys moved'],
        rw.slice().reverse().map((x) => [when(x.ts_ms),
          arms.filter((y) => isNum(x.weight_percent[y.variant])).map((y) => y.version + ' ' + sig(x.weight_percent[y.variant]) + '%').join(' · '),
          arms.filter((y) => isNum(x.p_best[y.variant])).map((y) => y.version + ' ' + x.p_best[y.variant].toFixed(3)).join(' · ') || '—',
          pct(x.moved_fraction, 2)]), { k: 'reweightings' })));
    }
    out.push(card('Versions', versionsTable(arms.map((x, i) => [x.version, x.variant + (i === 0 ? ' (control)' : ''), (report.versions || {})[x.version]]))));
    for (const c of segmentCards(a.segments, control, arms.length > 1 ? arms[1].version : r.candidate)) out.push(c);
    out.push(provenanceCard(report));
    out.push(card('Events', eventsTable(report.events || [])));
    return out;
  }

  function renderAb(data) {
    const { rollout: r, report, history } = data;
    const a = (report.analysis || {}).ab || {};
    if (a.abn) return renderAbn(data, a);
    const ab = a.report || {};
    const spec = r.spec || {};
    const control = r.current; const treat = r.candidate;
    const wb = isNum(spec.treatment_weight) ? spec.treatment_weight / 10000 : null;
    const obs = a.observed_split || {};
    const na = obs.a || 0; const nb = obs.b || 0; const total = na + nb;
    const srm = ab.srm || null;
    const test = ab.test || null;
    const req = ab.required_per_arm;
    const metric = spec.metric && typeof spec.metric === 'object' ? 'conversion: ' + spec.metric.conversion : String(spec.metric || 'accuracy');
    const c = ab.control || {}; const t = ab.treatment || {};
    const out = [rolloutHead(r)];
    out.push(h('div', { class: 'tiles' },
      tile('configured split', isNum(wb) ? pct(1 - wb, 0) + ' / ' + pct(wb, 0) : '—', { k: 'configured-split', sub: control + ' / ' + treat }),
      tile('observed split', na + ' / ' + nb, { k: 'observed-split', sub: total ? pct(na / total) + ' / ' + pct(nb / total) : 'no requests yet' }),
      tile('sample-ratio mismatch', srm ? (srm.mismatch ? 'MISMATCH' : 'ok') : '—', {
        k: 'srm', sub: srm ? 'χ² ' + sig(srm.statistic) + ', p = ' + pval(srm.p_value) + ' (threshold ' + sig(srm.threshold) + ')' : '',
        tone: srm && srm.mismatch ? 'bad' : srm ? 'good' : null,
      }),
      tile(metric + ' · ' + control, pct(c.trials ? c.successes / c.trials : null), { k: 'control-rate', sub: int(c.successes) + ' / ' + int(c.trials) }),
      tile(metric + ' · ' + treat, pct(t.trials ? t.successes / t.trials : null), { k: 'treatment-rate', sub: int(t.successes) + ' / ' + int(t.trials) }),
      tile('difference (B − A)', test ? pts(test.diff, 1) : '—', {
        k: 'diff', sub: test ? Math.round((1 - test.alpha) * 100) + '% CI [' + pts(test.ci_low, 1) + ', ' + pts(test.ci_high, 1) + ']' : '',
      }),
      tile('p-value', test ? pval(test.p_value) : '—', { k: 'p-value', sub: test ? 'z = ' + sig(test.z) : '' }),
      tile('P(B > A)', ab.bayes ? ab.bayes.prob_b_beats_a.toFixed(4) : '—', { k: 'prob-b', sub: 'Beta(1,1) priors' })));
    out.push(h('div', { class: 'grid' },
      chartCard(metric + ' per arm over time', 'metric', [
        series(history.filter((p) => p.ab), control + ' (A)', COLOR.current, (p) => p.ab.control_rate),
        series(history.filter((p) => p.ab), treat + ' (B)', COLOR.candidate, (p) => p.ab.treatment_rate),
      ], { fmt: pctTick }),
      chartCard('P(B > A) over time', 'prob', [
        series(history.filter((p) => p.ab), 'P(' + treat + ' beats ' + control + ')', COLOR.candidate, (p) => p.ab.prob_b_beats_a),
      ], { fmt: (v, st) => (st === undefined ? v.toFixed(4) : v.toFixed(decimals(st))), yMin: 0, yMax: 1, refs: [{ y: 0.95, label: 'P = 0.95' }] }),
      card('Sample size: progress to the required n' + (isNum(req) ? ' (' + req + ' per arm)' : ''),
        progressChart('sample', [
          { name: control + ' (A)', value: c.trials, max: req, color: COLOR.current },
          { name: treat + ' (B)', value: t.trials, max: req, color: COLOR.candidate },
        ], (row) => int(row.value) + ' / ' + int(row.max)),
        h('p', { class: 'muted', 'data-k': 'required' }, isNum(req) ? 'required per arm: ' + req + ' (baseline ' + pct(spec.baseline, 0) + ', MDE ' + pts(spec.mde, 0) + ', α ' + spec.alpha + ', power ' + spec.power + ')' : '')),
      card('Difference with its confidence interval',
        intervalChart('ci', test && test.diff, test && test.ci_low, test && test.ci_high, (v) => pts(v, 0)),
        h('p', { class: 'muted' }, test ? 'Wald ' + Math.round((1 - test.alpha) * 100) + '% CI [' + pts(test.ci_low, 2) + ', ' + pts(test.ci_high, 2) + '], Newcombe [' + pts(test.newcombe_low, 2) + ', ' + pts(test.newcombe_high, 2) + '], relative lift ' + pct(test.relative_lift) : '')),
      card('Observed vs configured split',
        h('div', { class: 'splits' },
          h('div', {}, h('small', {}, 'configured'), splitBar([{ label: control, share: isNum(wb) ? 1 - wb : 0, color: COLOR.current }, { label: treat, share: wb || 0, color: COLOR.candidate }])),
          h('div', {}, h('small', {}, 'observed'), splitBar(total ? [{ label: control, share: na / total, color: COLOR.current }, { label: treat, share: nb / total, color: COLOR.candidate }] : []))),
        chartCard('SRM p-value over time', 'srm', [
          series(history.filter((p) => p.ab), 'SRM p', COLOR.grey, (p) => p.ab.srm_p),
        ], { yMin: 0, yMax: 1, fmt: sig })),
      card('Arms', versionsTable([[control, 'A (control)', (report.versions || {})[control]], [treat, 'B (treatment)', (report.versions || {})[treat]]]),
        ab.mae_welch ? h('p', { class: 'muted', 'data-k': 'welch' }, 'MAE ' + treat + ' − ' + control + ' = ' + sig(ab.mae_welch.mean_diff) + ' (Welch t = ' + sig(ab.mae_welch.t) + ', p = ' + pval(ab.mae_welch.p_value) + ')') : null)));
    for (const c of segmentCards(a.segments, control, treat)) out.push(c);
    out.push(provenanceCard(report));
    out.push(card('Events', eventsTable(report.events || [])));
    return out;
  }

  function renderBlueGreen(data) {
    const { rollout: r, report, history } = data;
    const a = (report.analysis || {}).blue_green || {};
    const st = r.strategy || {};
    const blue = r.current; const green = r.candidate;
    const active = st.kind === 'blue_green' ? st.active : (st.version === green ? 'green' : 'blue');
    const vs = report.versions || {};
    const evs = report.events || [];
    const validated = evs.filter((e) => e.kind === 'validated' || e.kind === 'validation_failed').pop();
    const switches = evs.filter((e) => ['switched', 'rolled_back', 'retired', 'monitor_passed', 'monitor_failed', 'validated', 'validation_failed', 'promoted'].includes(e.kind));
    const lastSwap = (a.switches || []).filter((x) => isNum(x.routing_swap_us)).pop();
    const out = [rolloutHead(r)];
    out.push(h('div', { class: 'tiles' },
      tile('active colour', active, { k: 'active-colour', sub: (active === 'green' ? green : blue) + ' serves all traffic', tone: 'colour-' + active }),
      tile('blue', blue, { k: 'blue', sub: ms(vs[blue]?.p95_ms) + ' p95 · ' + pct(vs[blue]?.error_rate, 2) + ' errors' }),
      tile('green', green, { k: 'green', sub: ms(vs[green]?.p95_ms) + ' p95 · ' + pct(vs[green]?.error_rate, 2) + ' errors' }),
      tile('validation of green', validated ? (validated.kind === 'validated' ? 'passed' : 'failed') : '—', {
        k: 'validation', tone: validated ? (validated.kind === 'validated' ? 'good' : 'bad') : null,
        sub: validated ? 'accuracy ' + pct(validated.details.accuracy) + ', p95 ' + ms(validated.details.p95_ms) + ', ' + int(validated.details.samples) + ' rows' : 'pending',
      }),
      tile('last routing swap', lastSwap ? sig(lastSwap.routing_swap_us) + ' µs' : '—', { k: 'swap', sub: lastSwap ? lastSwap.kind + ' at ' + when(lastSwap.ts_ms) : '' })));
    out.push(h('div', { class: 'grid' },
      chartCard('Active colour over time', 'colour', [
        series(history, 'share on green (' + green + ')', COLOR.green, (p) => p.candidate_percent),
      ], { step: true, yMin: 0, yMax: 100, fmt: (v) => (v >= 100 ? 'green' : v <= 0 ? 'blue' : sig(v) + '%') }),
      chartCard('p95 latency per colour', 'latency', [
        series(history, 'blue ' + blue + ' p95', COLOR.blue, (p) => vstat(p, blue, 'p95_ms')),
        series(history, 'green ' + green + ' p95', COLOR.green, (p) => vstat(p, green, 'p95_ms')),
        series(history, 'blue ' + blue + ' p50', COLOR.blue, (p) => vstat(p, blue, 'p50_ms'), '2 3'),
        series(history, 'green ' + green + ' p50', COLOR.green, (p) => vstat(p, green, 'p50_ms'), '2 3'),
      ], { fmt: msTick, yMin: 0 }),
      chartCard('Error rate per colour', 'errors', [
        series(history, 'blue ' + blue, COLOR.blue, (p) => vstat(p, blue, 'error_rate')),
        series(history, 'green ' + green, COLOR.green, (p) => vstat(p, green, 'error_rate')),
      ], { fmt: pctTick, yMin: 0, yMax: 0.02 }),
      chartCard('Requests served per colour', 'requests', [
        series(history, 'blue ' + blue, COLOR.blue, (p) => vstat(p, blue, 'requests')),
        series(history, 'green ' + green, COLOR.green, (p) => vstat(p, green, 'requests')),
      ], { fmt: sig, yMin: 0 })));
    out.push(card('Per colour', versionsTable([[blue, 'blue' + (active === 'blue' ? ' (active)' : ''), vs[blue]], [green, 'green' + (active === 'green' ? ' (active)' : ''), vs[green]]])));
    out.push(card('Switch history', table(['time', 'event', 'message', 'routing swap', 'epoch'],
      switches.map((e) => [when(e.ts_ms), badge(e.kind, ALERT_EVENTS[e.kind] ? 'tone-' + ALERT_EVENTS[e.kind][1] : 'ev'), e.message,
        isNum(e.details.routing_swap_us) ? sig(e.details.routing_swap_us) + ' µs' : '—', int(e.details.epoch)]),
      { k: 'switches', empty: 'no switch yet' })));
    out.push(provenanceCard(report));
    out.push(card('Events', eventsTable(evs)));
    return out;
  }

  function renderAudit(data) {
    const v = data.verify;
    const out = [h('div', { class: 'tiles' },
      tile('audit events', String(data.events.length), { k: 'event-count', sub: 'across ' + state.rollouts.length + ' rollouts' }),
      tile('hash chain', v ? (v.ok ? 'verified' : 'BROKEN') : '—', {
        k: 'chain', tone: v ? (v.ok ? 'good' : 'bad') : null,
        sub: v ? (v.ok ? v.events + ' events, SHA-256 chained' : 'first bad seq ' + v.first_bad_seq + ': ' + (v.problem || '')) : '',
      }))];
    out.push(card('Audit trail (newest first)', eventsTable(data.events, true)));
    return out;
  }

  function render(rt, data) {
    const main = $('view');
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('on', a.getAttribute('data-view') === rt.view);
    }
    for (const [view, kind] of Object.entries(KIND_OF_VIEW)) {
      const kinds = KINDS_OF_VIEW[view] || [kind];
      const n = state.rollouts.filter((r) => kinds.includes(r.kind)).length;
      const el = document.querySelector('[data-count="' + view + '"]');
      if (el) el.textContent = n ? String(n) : '';
    }
    let content;
    if (rt.view === 'overview') content = renderOverview(data);
    else if (rt.view === 'audit') content = renderAudit(data);
    else if (!data.rollout) content = emptyKind(rt.view);
    else {
      const fn = { shadow: renderShadow, canary: renderCanary, ab: renderAb, bluegreen: renderBlueGreen }[rt.view];
      content = [pills(data.list, data.rollout, rt.view), fn(data)];
    }
    const scroll = window.scrollY;
    const wrap = h('div', { class: 'view view-' + rt.view, 'data-view': rt.view, 'data-rollout': data.rollout ? data.rollout.name : null }, content);
    main.replaceChildren(wrap);
    window.scrollTo(0, scroll);
  }

  // -------------------------------------------------------------------------------------------

  function start() {
    setupToken();
    $('confirm-ok').addEventListener('click', () => closeConfirm(true));
    $('confirm-cancel').addEventListener('click', () => closeConfirm(false));
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !$('confirm-dialog').hidden) closeConfirm(false);
    });
    window.addEventListener('hashchange', () => {
      state.lastKey = null;
      $('toast').hidden = true;
      window.scrollTo(0, 0);
      refresh();
    });
    refresh();
    setInterval(refresh, POLL_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
