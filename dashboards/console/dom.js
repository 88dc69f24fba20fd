// Building DOM nodes from data. Text always goes in as text nodes, never as HTML, so
// nothing an event or a rule carries can become markup in the console.

/** `el('td', {class: 'x', onclick: f}, 'text', child)`: an element with attributes,
 * listeners (`on…` keys) and children (strings become text nodes; null is skipped). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element, as `el` does for HTML. */
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

function setAttributes(node, attributes) {
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A labelled form control: `[label, control]` wrapped in a div. */
export function field(id, labelText, control) {
  control.id = id;
  return el('div', {}, el('label', { for: id }, labelText), control);
}

/** Makes a table row act like a button for mouse and keyboard (Enter or Space). */
export function activatable(row, action) {
  row.tabIndex = 0;
  row.classList.add('clickable');
  row.addEventListener('click', action);
  row.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      action();
    }
  });
  return row;
}

/** `2026-11-26T05:30:02.123Z` as local `2026-11-26 06:30:02`. */
export function formatTime(value) {
  if (!value) return '';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A dotted field of a nested event (`source.ip`), also when stored flat. */
export function pick(event, dotted) {
  if (event && Object.prototype.hasOwnProperty.call(event, dotted)) return event[dotted];
  let value = event;
  for (const part of dotted.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = value[part];
  }
  return value;
}

export function display(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A value as the query language takes it: bare when it is one plain word, else quoted
 * with `"` and `\` escaped (so no value can close the quote and add clauses). */
export function queryValue(value) {
  const text = String(value);
  return /^[A-Za-z0-9_.@/-]+$/.test(text) ? text : `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}
