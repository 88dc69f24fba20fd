// The console's charts, drawn as SVG from aggregation buckets: a time histogram (bars,
// with click-drag to pick a time range), a time series (line and area) and a horizontal
// top-N bar list. No chart library: these three shapes are all the console needs.
import { el, svg, replace, formatTime } from './dom.js';

const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

/** The chart's width in CSS pixels (it must be in the page), so text is drawn at its
 * real size. */
function widthOf(node) {
  return Math.max(200, Math.round(node.getBoundingClientRect().width) || 600);
}

/** Picks a bucket interval giving at most about 120 buckets over `spanMs`, in the
 * `date_histogram` syntax (`30s`, `5m`, `1h`, …). */
export function intervalFor(spanMs) {
  const steps = [['1s', 1e3], ['5s', 5e3], ['10s', 1e4], ['30s', 3e4], ['1m', 6e4], ['5m', 3e5], ['10m', 6e5],
    ['15m', 9e5], ['30m', 18e5], ['1h', 36e5], ['3h', 108e5], ['6h', 216e5], ['12h', 432e5], ['1d', 864e5]];
  const found = steps.find(([, ms]) => spanMs / ms <= 120);
  return found ? found[0] : '7d';
}

/** Buckets covering [start, end) every `step` ms, counts taken from `buckets`. */
export function fillBuckets(buckets, start, end, step) {
  const counts = new Map((buckets || []).map((b) => [Math.floor(b.key / step) * step, b.doc_count]));
  const filled = [];
  for (let key = Math.floor(start / step) * step; key < end; key += step) {
    filled.push({ key, doc_count: counts.get(key) || 0 });
  }
  return filled;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function bucketWidth(buckets) {
  if (buckets.length > 1) return buckets[1].key - buckets[0].key;
  return 60_000;
}

function frame(node, width, height, maxCount, start, end) {
  node.setAttribute('viewBox', `0 0 ${width} ${height}`);
  node.classList.add('chart');
  const plotHeight = height - PAD.top - PAD.bottom;
  const children = [];
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plotHeight * (1 - fraction);
    children.push(svg('line', { class: 'grid', x1: PAD.left, x2: width - PAD.right, y1: y, y2: y }));
    children.push(svg('text', { class: 'axis', x: PAD.left - 4, y: y + 3, 'text-anchor': 'end' },
      String(Math.round(maxCount * fraction))));
  }
  const ticks = Math.max(2, Math.min(6, Math.floor(width / 140)));
  for (let i = 0; i <= ticks; i += 1) {
    const t = start + ((end - start) * i) / ticks;
    const x = PAD.left + ((width - PAD.left - PAD.right) * i) / ticks;
    children.push(svg('text', {
      class: 'axis', x, y: height - 4, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle',
    }, end - start > 12 * 36e5 ? formatTime(t).slice(5, 16) : formatTime(t).slice(11, end - start > 36e5 ? 16 : 19)));
  }
  return { children, plotHeight };
}

/** Clears `node` and lays out a chart of `buckets` over time: its scale, axes and grid
 * (in `children`), or a "no events" note and `null` when there are no buckets. */
function timeChart(node, buckets, height, label) {
  replace(node);
  // Styled before measuring: an unstyled <svg> is 300 px wide whatever its container.
  node.classList.add('chart');
  const width = widthOf(node);
  node.setAttribute('role', 'img');
  node.setAttribute('aria-label', label);
  if (!buckets || buckets.length === 0) {
    node.setAttribute('viewBox', `0 0 ${width} ${height}`);
    node.append(svg('text', { class: 'axis', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'No events in this range'));
    return null;
  }
  const step = bucketWidth(buckets);
  const start = buckets[0].key;
  const end = buckets[buckets.length - 1].key + step;
  const maxCount = niceMax(Math.max(...buckets.map((b) => b.doc_count)));
  const { children, plotHeight } = frame(node, width, height, maxCount, start, end);
  return { width, step, start, end, maxCount, children, plotHeight, plotWidth: width - PAD.left - PAD.right };
}

/**
 * Bars of `buckets` ([{key: ms, doc_count}]) into `node` (an <svg>). `onRange(from, to)`
 * (ms) is called when the analyst drags across the chart, or clicks one bar (its bucket).
 */
export function histogram(node, buckets, { height = 160, onRange = null, label = 'Events over time' } = {}) {
  const chart = timeChart(node, buckets, height, label);
  if (!chart) return;
  const { width, start, end, maxCount, children, plotHeight, plotWidth } = chart;
  const xOf = (t) => PAD.left + ((t - start) / (end - start)) * plotWidth;
  const barWidth = Math.max(1, (plotWidth / buckets.length) * 0.85);
  for (const bucket of buckets) {
    const h = (bucket.doc_count / maxCount) * plotHeight;
    const bar = svg('rect', {
      class: 'bar', x: xOf(bucket.key), y: PAD.top + plotHeight - h, width: barWidth, height: Math.max(h, bucket.doc_count ? 1 : 0),
      dataset: { key: bucket.key, count: bucket.doc_count },
    }, svg('title', {}, `${formatTime(bucket.key)}: ${bucket.doc_count}`));
    children.push(bar);
  }
  node.append(...children);
  if (onRange) zoomable(node, width, xOf, start, end, chart.step, plotWidth, height, onRange);
}

function zoomable(node, width, xOf, start, end, step, plotWidth, height, onRange) {
  const timeAt = (clientX) => {
    const box = node.getBoundingClientRect();
    const x = ((clientX - box.left) / box.width) * width;
    const fraction = Math.min(1, Math.max(0, (x - PAD.left) / plotWidth));
    return start + fraction * (end - start);
  };
  let anchor = null;
  let selection = null;
  const stop = () => {
    anchor = null;
    if (selection) selection.remove();
    selection = null;
  };
  node.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    anchor = timeAt(event.clientX);
    selection = svg('rect', { class: 'selection', x: xOf(anchor), y: 0, width: 0, height });
    node.append(selection);
    try { node.setPointerCapture(event.pointerId); } catch { /* a synthetic pointer */ }
  });
  node.addEventListener('pointercancel', stop);
  node.addEventListener('pointermove', (event) => {
    if (anchor === null) return;
    const now = timeAt(event.clientX);
    selection.setAttribute('x', xOf(Math.min(anchor, now)));
    selection.setAttribute('width', Math.abs(xOf(now) - xOf(anchor)));
  });
  node.addEventListener('pointerup', (event) => {
    if (anchor === null) return;
    const now = timeAt(event.clientX);
    const [from, to] = [Math.min(anchor, now), Math.max(anchor, now)];
    stop();
    if (to - from > (end - start) / 200) {
      onRange(Math.floor(from), Math.ceil(to));
      return;
    }
    // A click: the bucket under the pointer.
    const bar = event.target.closest && event.target.closest('rect.bar');
    if (bar) onRange(Number(bar.dataset.key), Number(bar.dataset.key) + step);
  });
}

/** A line and area of `buckets` over time. */
export function timeseries(node, buckets, { height = 160, label = 'Count over time' } = {}) {
  const chart = timeChart(node, buckets, height, label);
  if (!chart) return;
  const { step, start, end, maxCount, children, plotHeight, plotWidth } = chart;
  const points = buckets.map((b) => [
    PAD.left + ((b.key + step / 2 - start) / (end - start)) * plotWidth,
    PAD.top + plotHeight - (b.doc_count / maxCount) * plotHeight,
  ]);
  const line = points.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
  const base = PAD.top + plotHeight;
  const area = `${line}L${points[points.length - 1][0].toFixed(1)},${base}L${points[0][0].toFixed(1)},${base}Z`;
  children.push(svg('path', { class: 'area', d: area }), svg('path', { class: 'line', d: line }));
  node.append(...children);
}

/** The top values of a field as a list of labelled bars (HTML, so it reads at any
 * width and to a screen reader); `onPick(key)` when a value is chosen. */
export function barList(node, buckets, { onPick = null, label = 'Top values' } = {}) {
  const maxCount = Math.max(1, ...buckets.map((b) => b.doc_count));
  const list = el('ol', { class: 'top-list', 'aria-label': label });
  for (const bucket of buckets) {
    const bar = el('span', { class: 'top-bar' });
    bar.style.width = `${Math.max(1, (100 * bucket.doc_count) / maxCount)}%`;
    const name = String(bucket.key_as_string ?? bucket.key);
    const text = onPick
      ? el('button', { type: 'button', class: 'top-key', title: name, onclick: () => onPick(bucket.key) }, name)
      : el('span', { class: 'top-key', title: name }, name);
    list.append(el('li', { dataset: { key: bucket.key } }, text, el('span', { class: 'top-track' }, bar), el('span', { class: 'top-count' }, bucket.doc_count.toLocaleString())));
  }
  replace(node, list);
}
