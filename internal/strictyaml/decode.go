// Package strictyaml decodes one YAML document into a Go struct strictly — unknown
// fields, duplicate keys, wrong types, aliases and extra documents are all errors —
// and remembers the line of every field so that later validation errors can point
// at the line that caused them.
//
// sigs.k8s.io/yaml converts YAML to JSON before decoding and so loses positions;
// here the YAML node tree is walked directly against the target's `json` tags, which
// keeps one set of tags for both YAML and JSON.
package strictyaml

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem found while decoding, at a line of the document.
type Error struct {
	Line    int    // 1-based; 0 when unknown
	Field   string // field path such as spec.candidates[0].node; empty for document-level errors
	Message string
}

func (e Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Message)
	}
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Message)
}

// Positions maps field paths to the line where they appear.
type Positions struct {
	lines map[string]int
}

// Line returns the line of path or, when the path itself is absent (a missing
// required field), the line of its nearest ancestor that is present.
func (p *Positions) Line(path string) int {
	if p == nil {
		return 0
	}
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		path = parent(path)
	}
	return p.lines[""]
}

func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Decode parses data, which must hold exactly one YAML document whose top level is a
// mapping, into out (a pointer to a struct). Fields absent from the document keep the
// values out already has, so callers pre-fill defaults. All problems are returned,
// not just the first.
func Decode(data []byte, out any) (*Positions, []Error) {
	pos := &Positions{lines: map[string]int{"": 1}}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return pos, []Error{syntaxError(err)}
		}
		if !isNull(&n) { // a leading or trailing "---" is not a document
			docs = append(docs, &n)
		}
	}
	if len(docs) == 0 {
		return pos, []Error{{Line: 1, Message: "the file is empty: expected one YAML document with apiVersion and kind"}}
	}
	if len(docs) > 1 {
		return pos, []Error{{Line: docs[1].Line, Message: fmt.Sprintf("the file holds %d YAML documents: expected exactly one (one object per file)", len(docs))}}
	}
	root := docs[0]
	if root.Kind == yaml.DocumentNode {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return pos, []Error{{Line: root.Line, Message: fmt.Sprintf("the document is %s: expected a mapping with apiVersion, kind and metadata", describe(root))}}
	}
	d := &decoder{pos: pos}
	d.value(root, reflect.ValueOf(out).Elem(), "")
	return pos, d.errs
}

func syntaxError(err error) Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Error{Line: line, Message: "invalid YAML: " + m[2]}
	}
	return Error{Line: 1, Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func isNull(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode {
		return len(n.Content) == 0 || isNull(n.Content[0])
	}
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

type decoder struct {
	pos  *Positions
	errs []Error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, Error{Line: n.Line, Field: path, Message: fmt.Sprintf(format, args...)})
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// value decodes n into v, which must be settable.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if _, ok := d.pos.lines[path]; !ok {
		d.pos.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.fail(n, path, "YAML anchors and aliases are not supported: write the value out")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// null means "not set": pointers, slices and maps become nil, others keep their default.
		switch v.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map:
			v.SetZero()
		}
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(jsonUnmarshaler) {
		raw, err := toJSON(n)
		if err != nil {
			d.fail(n, path, "%v", err)
			return
		}
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			d.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "expected a mapping, got %s", describe(n))
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			d.fail(n, path, "internal error: map keys must be strings")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key, ok := d.key(k, path, seen)
			if !ok {
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(val, elem, fmt.Sprintf("%s[%s]", path, key))
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			d.fail(n, path, "expected a string, got %s (quote it if it is meant as text)", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.fail(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.fail(n, path, "expected an integer, got %s", describe(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil {
			d.fail(n, path, "integer %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			d.fail(n, path, "expected a number, got %s", describe(n))
			return
		}
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, path, "expected a finite number, got %s", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		d.fail(n, path, "internal error: cannot decode into %s", v.Type())
	}
}

func (d *decoder) key(k *yaml.Node, path string, seen map[string]int) (string, bool) {
	if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
		d.fail(k, path, "mapping keys must be strings, got %s", describe(k))
		return "", false
	}
	if k.Tag == "!!merge" {
		d.fail(k, path, "YAML merge keys (<<) are not supported: write the fields out")
		return "", false
	}
	if first, dup := seen[k.Value]; dup {
		d.fail(k, join(path, k.Value), "duplicate key (first defined at line %d)", first)
		return "", false
	}
	seen[k.Value] = k.Line
	return k.Value, true
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, ok := d.key(k, path, seen)
		if !ok {
			continue
		}
		fp := join(path, key)
		idx, ok := fields.byName[key]
		if !ok {
			d.fail(k, fp, "unknown field; allowed fields are %s", strings.Join(fields.names, ", "))
			continue
		}
		d.pos.lines[fp] = k.Line
		d.value(val, v.FieldByIndex(idx), fp)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

type structFields struct {
	byName map[string][]int
	names  []string
}

// fieldsOf lists the JSON names of t's fields, flattening `json:",inline"` and
// anonymous structs the way encoding/json does.
func fieldsOf(t reflect.Type) structFields {
	sf := structFields{byName: map[string][]int{}}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = f.Name
			}
			sf.byName[name] = idx
			sf.names = append(sf.names, name)
		}
	}
	walk(t, nil)
	sort.Strings(sf.names)
	return sf
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.Tag {
	case "!!str":
		return fmt.Sprintf("the string %q", clip(n.Value))
	case "!!int":
		return "the integer " + clip(n.Value)
	case "!!float":
		return "the number " + clip(n.Value)
	case "!!bool":
		return "the boolean " + n.Value
	case "!!null":
		return "null"
	case "!!timestamp":
		return fmt.Sprintf("the timestamp %s (quote it)", clip(n.Value))
	}
	return fmt.Sprintf("a value tagged %s", n.Tag)
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// toJSON renders a node as JSON for types that decode themselves (durations,
// quantities, times). Only scalars and plain collections are expected there.
func toJSON(n *yaml.Node) ([]byte, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str", "!!timestamp":
			return json.Marshal(n.Value)
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("expected a finite number, got %s", n.Value)
			}
			return []byte(n.Value), nil
		case "!!bool":
			return []byte(n.Value), nil
		}
		return nil, fmt.Errorf("unsupported value %s", describe(n))
	case yaml.SequenceNode:
		parts := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			b, err := toJSON(c)
			if err != nil {
				return nil, err
			}
			parts = append(parts, string(b))
		}
		return []byte("[" + strings.Join(parts, ",") + "]"), nil
	case yaml.MappingNode:
		parts := make([]string, 0, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, _ := json.Marshal(n.Content[i].Value)
			b, err := toJSON(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			parts = append(parts, string(k)+":"+string(b))
		}
		return []byte("{" + strings.Join(parts, ",") + "}"), nil
	}
	return nil, fmt.Errorf("unsupported value %s", describe(n))
}
