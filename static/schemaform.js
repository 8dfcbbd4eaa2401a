// A form made from a JSON Schema, for the answer a waiting run asks for (`input_requested`).
//
// booleans are checkboxes, integers and numbers number fields, strings text fields, an `enum`
// (or `const`) a choice (radios up to four, else a select), an object with `properties` one
// field per property; anything else is a JSON text area. The form only checks what it must to
// build a value (a number is a number, JSON parses, required fields are filled): the server
// checks the rest against the schema and says what is wrong (`invalid_input`).

import { el } from './dom.js';

const RADIOS_UP_TO = 4;

/** A field that cannot give a value; `input` is the element to point the person at. */
export class FieldError extends Error {
  constructor(message, input) {
    super(message);
    this.name = 'FieldError';
    this.input = input;
  }
}

/** The types a schema allows, without "null" (`type` may be a string or a list). */
function typesOf(schema) {
  const type = schema.type;
  const types = Array.isArray(type) ? type : typeof type === 'string' ? [type] : [];
  return types.filter((t) => t !== 'null');
}

/** How a schema is asked for: 'boolean' | 'number' | 'string' | 'choice' | 'object' | 'json'. */
export function widgetKind(schema) {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) return 'json';
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return 'choice';
  if ('const' in schema) return 'choice';
  if (schema.anyOf || schema.oneOf || schema.allOf || schema.not || schema.$ref) return 'json';
  const types = typesOf(schema);
  if (types.length !== 1) return 'json';
  switch (types[0]) {
    case 'boolean':
      return 'boolean';
    case 'integer':
    case 'number':
      return 'number';
    case 'string':
      return 'string';
    case 'object':
      return schema.properties && typeof schema.properties === 'object' ? 'object' : 'json';
    default:
      return 'json'; // arrays, and types this form does not know
  }
}

/** A value for reading in a choice or a JSON field: strings as they are, the rest as JSON. */
function label(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function hintFor(schema, id) {
  const text = typeof schema?.description === 'string' ? schema.description : '';
  return text ? el('p', { class: 'hint', id: `${id}-hint` }, text) : null;
}

/**
 * Build the fields for `schema`. Returns {node, read}: `read()` gives the value, or
 * `undefined` for an optional field left empty, or throws a FieldError.
 * `name` labels the field, `required` says whether it must have a value; a `bare` object
 * gives its fields without a fieldset of its own (the caller's form is one).
 */
export function buildField(schema, { id, name, required, bare = false }) {
  const kind = widgetKind(schema);
  const title = typeof schema?.title === 'string' && schema.title ? schema.title : name;
  const hint = hintFor(schema, id);
  const described = hint ? `${id}-hint` : null;
  const mark = required && kind !== 'boolean' ? el('span', { class: 'required' }, ' (required)') : null;
  const hasDefault = schema && typeof schema === 'object' && 'default' in schema;

  switch (kind) {
    case 'boolean': {
      const input = el('input', { type: 'checkbox', id, 'aria-describedby': described });
      input.checked = hasDefault ? schema.default === true : false;
      const node = el('div', { class: 'field field-boolean' }, el('label', { for: id }, input, ` ${title}`), hint);
      return { node, read: () => input.checked };
    }
    case 'number': {
      const integer = typesOf(schema)[0] === 'integer';
      const input = el('input', {
        type: 'number',
        id,
        step: integer ? '1' : 'any',
        inputmode: integer ? 'numeric' : 'decimal',
        'aria-describedby': described,
        'aria-required': required ? 'true' : null,
      });
      if (hasDefault && typeof schema.default === 'number') input.value = String(schema.default);
      const node = el('div', { class: 'field field-number' }, el('label', { for: id }, title, mark), input, hint);
      const read = () => {
        if (input.value === '') {
          if (input.validity.badInput) throw new FieldError(`${title} must be a number`, input);
          if (required) throw new FieldError(`${title} is required`, input);
          return undefined;
        }
        const value = Number(input.value);
        if (!Number.isFinite(value)) throw new FieldError(`${title} must be a number`, input);
        if (integer && !Number.isInteger(value)) throw new FieldError(`${title} must be a whole number`, input);
        return value;
      };
      return { node, read };
    }
    case 'string': {
      const input = el('input', {
        type: 'text',
        id,
        autocomplete: 'off',
        'aria-describedby': described,
        'aria-required': required ? 'true' : null,
      });
      if (hasDefault && typeof schema.default === 'string') input.value = schema.default;
      const node = el('div', { class: 'field field-string' }, el('label', { for: id }, title, mark), input, hint);
      // An optional text left empty is left out; a required one is sent as "" (the schema decides).
      return { node, read: () => (input.value === '' && !required ? undefined : input.value) };
    }
    case 'choice': {
      const values = Array.isArray(schema.enum) && schema.enum.length > 0 ? schema.enum : [schema.const];
      const initial = hasDefault ? values.findIndex((v) => JSON.stringify(v) === JSON.stringify(schema.default)) : -1;
      if (values.length <= RADIOS_UP_TO) {
        const radios = values.map((value, i) => {
          const radio = el('input', { type: 'radio', name: id, id: `${id}-${i}`, value: String(i) });
          radio.checked = i === initial;
          return radio;
        });
        const node = el(
          'fieldset',
          { class: 'field field-choice', id, 'aria-describedby': described },
          el('legend', {}, title, mark),
          ...radios.map((radio, i) => el('label', { for: radio.id, class: 'choice' }, radio, ` ${label(values[i])}`)),
          hint,
        );
        const read = () => {
          const picked = radios.findIndex((radio) => radio.checked);
          if (picked >= 0) return values[picked];
          if (required) throw new FieldError(`Choose one for ${title}`, radios[0]);
          return undefined;
        };
        return { node, read };
      }
      const select = el(
        'select',
        { id, 'aria-describedby': described, 'aria-required': required ? 'true' : null },
        el('option', { value: '' }, required ? 'Choose…' : '(none)'),
        ...values.map((value, i) => el('option', { value: String(i) }, label(value))),
      );
      select.value = initial >= 0 ? String(initial) : '';
      const node = el('div', { class: 'field field-choice' }, el('label', { for: id }, title, mark), select, hint);
      const read = () => {
        if (select.value !== '') return values[Number(select.value)];
        if (required) throw new FieldError(`Choose one for ${title}`, select);
        return undefined;
      };
      return { node, read };
    }
    case 'object': {
      const needed = new Set(Array.isArray(schema.required) ? schema.required : []);
      const fields = Object.entries(schema.properties).map(([key, sub]) => [
        key,
        buildField(sub, { id: `${id}-${key.replace(/[^A-Za-z0-9_-]/g, '_')}`, name: key, required: needed.has(key) }),
      ]);
      const node = bare
        ? el('div', { class: 'field-object' }, hint, ...fields.map(([, field]) => field.node))
        : el(
            'fieldset',
            { class: 'field field-object', 'aria-describedby': described },
            el('legend', {}, title, mark),
            hint,
            ...fields.map(([, field]) => field.node),
          );
      const read = () => {
        const value = {};
        for (const [key, field] of fields) {
          const v = field.read();
          if (v !== undefined) value[key] = v;
        }
        return value;
      };
      return { node, read };
    }
    default: {
      const input = el('textarea', {
        id,
        rows: '4',
        spellcheck: 'false',
        autocapitalize: 'off',
        class: 'mono',
        'aria-describedby': described,
        'aria-required': required ? 'true' : null,
      });
      if (hasDefault) input.value = JSON.stringify(schema.default, null, 2);
      const node = el(
        'div',
        { class: 'field field-json' },
        el('label', { for: id }, `${title} (JSON)`, mark),
        input,
        hint,
      );
      const read = () => {
        if (input.value.trim() === '') {
          if (required) throw new FieldError(`${title} needs a JSON value, e.g. true, 3, "text" or {}`, input);
          return undefined;
        }
        try {
          return JSON.parse(input.value);
        } catch (err) {
          throw new FieldError(`${title} is not valid JSON: ${err.message}`, input);
        }
      };
      return { node, read };
    }
  }
}

/** The whole answer for a request's `schema` (null means any JSON): always required. */
export function buildAnswer(schema, id) {
  const kind = widgetKind(schema);
  return buildField(schema ?? null, { id, name: kind === 'boolean' ? 'Yes' : 'Answer', required: true, bare: true });
}
