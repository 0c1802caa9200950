package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

// regFileFlags are the flags that a line of a registration file may carry:
// those of register that describe one registration.
var regFileFlags = []string{"name", "ip", "port", "backend", "state", "ttl", "proxy-protocol"}

// regFile is a parsed registration file: the requests, and the line of
// each, for error messages.
type regFile struct {
	name  string
	regs  []control.RegisterRequest
	lines []int
}

// readRegFile reads a registration file (see registerCommand's
// description): one registration per line, written as the flags of
// `vipmux register` (optionally after "vipmux register"), blank lines and
// '#' comments ignored. path "-" is standard input. Errors name the file,
// the line and the flag.
func readRegFile(path string, stdin io.Reader) (*regFile, error) {
	f := &regFile{name: path}
	r := stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[0] == "vipmux" {
			fields = fields[1:]
		}
		if len(fields) > 0 && fields[0] == "register" {
			fields = fields[1:]
		}
		if len(fields) == 0 {
			continue
		}
		req, err := parseRegLine(fields)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if len(f.regs) == control.MaxBatch {
			return nil, fmt.Errorf("%s:%d: more than %d registrations in one file: split it", path, n, control.MaxBatch)
		}
		f.regs = append(f.regs, req)
		f.lines = append(f.lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(f.regs) == 0 {
		return nil, fmt.Errorf("%s: no registrations in it (one per line: --name NAME --ip IP --backend HOST[:PORT] ...)", path)
	}
	return f, nil
}

// parseRegLine parses the flags of one line: --flag VALUE or --flag=VALUE
// (or with one dash), each at most once.
func parseRegLine(fields []string) (control.RegisterRequest, error) {
	vals := map[string]string{}
	for i := 0; i < len(fields); i++ {
		arg := fields[i]
		name, ok := strings.CutPrefix(arg, "--")
		if !ok {
			if name, ok = strings.CutPrefix(arg, "-"); !ok || name == "" {
				return control.RegisterRequest{}, fmt.Errorf("%q: want --flag VALUE (%s)", arg, flagList())
			}
		}
		name, val, hasVal := strings.Cut(name, "=")
		if !isRegFileFlag(name) {
			return control.RegisterRequest{}, fmt.Errorf("unknown flag --%s (a line takes %s)", name, flagList())
		}
		if !hasVal {
			if i+1 == len(fields) {
				return control.RegisterRequest{}, fmt.Errorf("--%s: missing its value", name)
			}
			i++
			val = fields[i]
		}
		if val == "" {
			return control.RegisterRequest{}, fmt.Errorf("--%s: empty value", name)
		}
		if _, dup := vals[name]; dup {
			return control.RegisterRequest{}, fmt.Errorf("--%s given twice", name)
		}
		vals[name] = val
	}
	for _, req := range []string{"name", "backend"} {
		if _, ok := vals[req]; !ok {
			return control.RegisterRequest{}, fmt.Errorf("--%s is missing", req)
		}
	}
	req := control.RegisterRequest{Name: vals["name"], IP: vals["ip"], Backend: vals["backend"], State: vals["state"]}
	if v, ok := vals["port"]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return req, fmt.Errorf("--port %q: want a port 1-65535", v)
		}
		req.Port = &p
	}
	if v, ok := vals["ttl"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return req, fmt.Errorf("--ttl %q: want a duration such as 10s", v)
		}
		req.TTL = d.String()
	}
	if v, ok := vals["proxy-protocol"]; ok {
		pp, err := registry.ParseProxyProtocol(v)
		if err != nil || v == "" {
			return req, fmt.Errorf("--proxy-protocol %q: use v1, v2 or none", v)
		}
		req.ProxyProtocol = string(pp)
	}
	return req, nil
}

func isRegFileFlag(name string) bool {
	for _, f := range regFileFlags {
		if f == name {
			return true
		}
	}
	return false
}

func flagList() string { return "--" + strings.Join(regFileFlags, ", --") }

// batchFieldRE matches the field of a batch error: registrations[INDEX]
// and the registration's own field, if any.
var batchFieldRE = regexp.MustCompile(`^registrations\[(\d+)\](?:\.(.+))?$`)

// explain turns the gateway's error about a registration of the batch into
// one that names the file's line.
func (f *regFile) explain(err error) error {
	var apiErr *control.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	m := batchFieldRE.FindStringSubmatch(apiErr.Field)
	if m == nil {
		return err
	}
	i, convErr := strconv.Atoi(m[1])
	if convErr != nil || i >= len(f.lines) {
		return err
	}
	e := *apiErr
	e.Field = m[2]
	return fmt.Errorf("%s:%d: %w (nothing of the file was registered)", f.name, f.lines[i], &e)
}
