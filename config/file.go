package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// node is one key of the file: its value as the TOML decoder returns it,
// the line that sets it, and for a table its keys.
type node struct {
	value any
	// line is where the key is written; for a table that the file never
	// names (a parent of a dotted key), the line of its first key.
	line int
	// keys are a table's keys; nil for a value that is not a table.
	keys map[string]*node
}

// lookup returns the node at name ("section.key"), or nil.
func (n *node) lookup(name string) *node {
	for _, s := range strings.Split(name, ".") {
		if n == nil || n.keys == nil {
			return nil
		}
		n = n.keys[s]
	}
	return n
}

// sortedKeys are a table's keys in the order of their lines.
func (n *node) sortedKeys() []string {
	ks := slices.Sorted(maps.Keys(n.keys))
	slices.SortStableFunc(ks, func(a, b string) int { return n.keys[a].line - n.keys[b].line })
	return ks
}

// readTOML decodes data into a tree of nodes. Only a syntax error fails:
// the types of the values are for each key to judge, so that one bad value
// does not hide the others.
func readTOML(data []byte) (*node, error) {
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &syntaxError{pe: pe}
		}
		return nil, err
	}
	root := &node{keys: map[string]*node{}}
	for name, p := range top {
		root.keys[name] = readNode(&md, p)
	}
	return root, nil
}

// errLocate is what locate's UnmarshalTOML returns: the decoder then wraps
// it in a toml.ParseError that carries the key's position, which the
// decoder exposes no other way.
var errLocate = errors.New("locate")

// locate captures a value as the TOML decoder returns it.
type locate struct{ v any }

// UnmarshalTOML implements toml.Unmarshaler.
func (l *locate) UnmarshalTOML(v any) error {
	l.v = v
	return errLocate
}

// readNode reads the value p and, for a table, its keys.
func readNode(md *toml.MetaData, p toml.Primitive) *node {
	var l locate
	n := &node{}
	var pe toml.ParseError
	if err := md.PrimitiveDecode(p, &l); errors.As(err, &pe) {
		n.line = pe.Position.Line
	}
	n.value = l.v
	if _, ok := l.v.(map[string]any); !ok {
		return n
	}
	var children map[string]toml.Primitive
	if err := md.PrimitiveDecode(p, &children); err != nil {
		// Not reachable: the value is a table.
		return n
	}
	n.keys = make(map[string]*node, len(children))
	implicit := n.line == 0
	for name, c := range children {
		cn := readNode(md, c)
		n.keys[name] = cn
		if implicit && cn.line > 0 && (n.line == 0 || cn.line < n.line) {
			n.line = cn.line
		}
	}
	return n
}

// unknownKeys walks the file and reports every key that keys does not
// describe, and every section that is not a table. A key inside an
// unknown table is not reported on its own: the table is.
func (n *node) unknownKeys(path []string) []*KeyError {
	var errs []*KeyError
	for _, name := range n.sortedKeys() {
		c, p := n.keys[name], append(slices.Clip(path), name)
		leaf, section := match(p)
		key := strings.Join(p, ".")
		switch {
		case leaf:
			// The key's decode judges the value.
		case !section:
			errs = append(errs, &KeyError{Key: key, Line: c.line, Err: unknownKey(path)})
		case c.keys == nil:
			errs = append(errs, &KeyError{Key: key, Line: c.line, Err: fmt.Errorf("want a table: [%s] on a line of its own, then its keys", key)})
		default:
			errs = append(errs, c.unknownKeys(p)...)
		}
	}
	return errs
}

// syntaxError is a TOML syntax error, with its line and column: the file
// cannot be read further.
type syntaxError struct {
	pe toml.ParseError
}

func (e *syntaxError) Error() string {
	p := e.pe.Position
	if e.pe.LastKey == "" {
		return fmt.Sprintf("toml: line %d, column %d: %s", p.Line, p.Col, e.pe.Message)
	}
	return fmt.Sprintf("toml: line %d, column %d (last key %q): %s", p.Line, p.Col, e.pe.LastKey, e.pe.Message)
}

// Unwrap returns the toml.ParseError, whose ErrorWithPosition shows the
// offending line.
func (e *syntaxError) Unwrap() error { return e.pe }

// unknownKey is the problem of an unknown key in the table at path: it
// names the keys that the table takes.
func unknownKey(path []string) error {
	var names []string
	for _, p := range patterns() {
		if len(p) > len(path) && within(path, p) && !slices.Contains(names, p[len(path)]) {
			names = append(names, p[len(path)])
		}
	}
	if len(path) == 0 {
		return fmt.Errorf("unknown key: the file takes the tables [%s]", strings.Join(names, "], ["))
	}
	return fmt.Errorf("unknown key: [%s] takes %s", strings.Join(path, "."), strings.Join(names, ", "))
}
