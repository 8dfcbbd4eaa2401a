// DOM helpers: build elements from data without ever parsing data as HTML.

/**
 * el('a', {href: '#/', class: 'link'}, 'text', childNode) -> HTMLAnchorElement.
 * Attributes are set with setAttribute (or as properties for `dataset` / `hidden` /
 * `disabled` / `value`); strings among the children become text nodes.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name === 'hidden' || name === 'disabled' || name === 'value') node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** Show or hide an element with the `hidden` attribute (styled display: none). */
export function show(node, visible) {
  node.hidden = !visible;
}

/** Replace every child of `node` with `children` (strings become text). */
export function replaceChildren(node, ...children) {
  node.replaceChildren(...children.filter((child) => child !== null && child !== undefined));
}
