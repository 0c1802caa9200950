package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A kind is how the keys of one Go type are read from TOML, written back
// and compared.
type kind[T any] struct {
	// want describes a good value, with %s for an example: "a duration
	// string such as %s".
	want string
	// decode converts a value as the TOML decoder returns it (string,
	// int64, float64, bool, []any, map[string]any, a time). It returns
	// errType for a value of another TOML type, elemErrors for bad
	// elements of a list (with the good ones in place), or an error that
	// says why the value does not parse.
	decode func(v any) (T, error)
	// format writes a value as the file would, "none" for an empty value.
	format func(T) string
	// show, if set, is how a Change shows a value instead of format.
	show  func(T) string
	equal func(a, b T) bool
}

// Aliases, so that the table reads as the types it describes.
type (
	addr         = netip.Addr
	hardwareAddr = net.HardwareAddr
	prefixes     = []netip.Prefix
)

// errType reports a value of the wrong TOML type; the key's want says what
// to write.
var errType = errors.New("wrong type")

func equal[T comparable](a, b T) bool { return a == b }

var text = kind[string]{
	want: "a string such as %s",
	decode: func(v any) (string, error) {
		s, ok := v.(string)
		if !ok {
			return "", errType
		}
		return s, nil
	},
	format: func(s string) string {
		if s == "" {
			return "none"
		}
		return strconv.Quote(s)
	},
	equal: equal[string],
}

var integer = kind[int]{
	want: "an integer such as %s",
	decode: func(v any) (int, error) {
		n, ok := v.(int64)
		if !ok {
			return 0, errType
		}
		if int64(int(n)) != n {
			return 0, fmt.Errorf("%d is too large", n)
		}
		return int(n), nil
	},
	format: strconv.Itoa,
	equal:  equal[int],
}

var boolean = kind[bool]{
	want: "a boolean (true or false) such as %s",
	decode: func(v any) (bool, error) {
		b, ok := v.(bool)
		if !ok {
			return false, errType
		}
		return b, nil
	},
	format: strconv.FormatBool,
	equal:  equal[bool],
}

var duration = kind[Duration]{
	want: "a duration string such as %s",
	decode: func(v any) (Duration, error) {
		s, ok := v.(string)
		if !ok {
			return Duration{}, errType
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return Duration{}, fmt.Errorf("%q is not a duration", s)
		}
		return Duration{d}, nil
	},
	format: func(d Duration) string { return strconv.Quote(d.Duration.String()) },
	equal:  equal[Duration],
}

// ipAddr is an IP address; an empty string is no address.
var ipAddr = kind[addr]{
	want: "an IP address string such as %s",
	decode: func(v any) (addr, error) {
		s, ok := v.(string)
		if !ok {
			return addr{}, errType
		}
		if s == "" {
			return addr{}, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return addr{}, fmt.Errorf("%q is not an IP address", s)
		}
		return a, nil
	},
	format: func(a addr) string {
		if !a.IsValid() {
			return "none"
		}
		return strconv.Quote(a.String())
	},
	// Bare, as reloads have always logged an address change
	// ("shared.address: none -> 198.18.0.100").
	show: func(a addr) string {
		if !a.IsValid() {
			return "none"
		}
		return a.String()
	},
	equal: equal[addr],
}

// mac is a MAC address; an empty string is none (the default).
var mac = kind[hardwareAddr]{
	want: "a MAC address string such as %s",
	decode: func(v any) (hardwareAddr, error) {
		s, ok := v.(string)
		if !ok {
			return nil, errType
		}
		if s == "" {
			return nil, nil
		}
		m, err := net.ParseMAC(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a MAC address", s)
		}
		return m, nil
	},
	format: func(m hardwareAddr) string {
		if m == nil {
			return "none"
		}
		return strconv.Quote(m.String())
	},
	equal: func(a, b hardwareAddr) bool { return bytes.Equal(a, b) },
}

// prefixList is a list of CIDR prefixes, stored as written: a prefix with
// host bits set is refused by its check, not masked.
var prefixList = kind[prefixes]{
	want: "a list of CIDR prefix strings such as %s",
	decode: func(v any) (prefixes, error) {
		list, ok := v.([]any)
		if !ok {
			return nil, errType
		}
		const want = `want a CIDR prefix string such as "198.18.0.0/24"`
		var out prefixes
		var errs elemErrors
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				errs = append(errs, elemError{i, errors.New(want)})
				out = append(out, netip.Prefix{})
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				// Keep an invalid placeholder so that the later
				// elements keep their indices.
				errs = append(errs, elemError{i, fmt.Errorf("%q is not a CIDR prefix: %s", s, want)})
			}
			out = append(out, p)
		}
		if errs != nil {
			return out, errs
		}
		return out, nil
	},
	format: func(ps prefixes) string {
		if len(ps) == 0 {
			return "none"
		}
		q := make([]string, len(ps))
		for i, p := range ps {
			q[i] = strconv.Quote(p.String())
		}
		return "[" + strings.Join(q, ", ") + "]"
	},
	equal: slices.Equal[prefixes],
}

// elemError is a problem with the element at index i of a list key; it is
// reported as "key[i]".
type elemError struct {
	i   int
	err error
}

// elemErrors are the problems with the elements of one list key.
type elemErrors []elemError

func (e elemErrors) Error() string {
	s := make([]string, len(e))
	for i, x := range e {
		s[i] = fmt.Sprintf("[%d]: %v", x.i, x.err)
	}
	return strings.Join(s, "\n")
}

// keyErrors turns the error of a key's decode or check into KeyErrors: one
// per element for elemErrors (within a join too), one for the key
// otherwise.
func keyErrors(name string, err error) []*KeyError {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*KeyError
		for _, e := range j.Unwrap() {
			out = append(out, keyErrors(name, e)...)
		}
		return out
	}
	if ee, ok := err.(elemErrors); ok {
		out := make([]*KeyError, len(ee))
		for i, e := range ee {
			out[i] = &KeyError{Key: fmt.Sprintf("%s[%d]", name, e.i), Err: e.err}
		}
		return out
	}
	return []*KeyError{{Key: name, Err: err}}
}
