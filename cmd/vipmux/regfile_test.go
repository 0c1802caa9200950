package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/control"
)

func TestReadRegFile(t *testing.T) {
	port := 8080
	tests := []struct {
		name      string
		in        string
		want      []control.RegisterRequest
		wantLines []int
		wantErr   string
	}{
		{
			name: "flags, comments, blank lines, both flag spellings",
			in: `# servers
--name s1 --ip 198.18.100.1 --backend 198.19.0.2

  --name=s2 -ip=198.18.100.2 --backend 198.19.0.3 --ttl 1m  # leased
vipmux register --name web-c --port 8080 --backend 198.19.0.4:8080 --state standby --proxy-protocol v2
register --name s3 --ip 198.18.100.3 --backend 198.19.0.2 --proxy-protocol none
`,
			want: []control.RegisterRequest{
				{Name: "s1", IP: "198.18.100.1", Backend: "198.19.0.2"},
				{Name: "s2", IP: "198.18.100.2", Backend: "198.19.0.3", TTL: "1m0s"},
				{Name: "web-c", Port: &port, Backend: "198.19.0.4:8080", State: "standby", ProxyProtocol: "v2"},
				{Name: "s3", IP: "198.18.100.3", Backend: "198.19.0.2"},
			},
			wantLines: []int{2, 4, 5, 6},
		},
		{name: "unknown flag", in: "--name s1 --ip 198.18.100.1 --backend 198.19.0.2\n--name s2 --weight 3 --backend x\n", wantErr: "regs.txt:2: unknown flag --weight"},
		{name: "missing name", in: "--ip 198.18.100.1 --backend 198.19.0.2\n", wantErr: "regs.txt:1: --name is missing"},
		{name: "missing backend", in: "\n\n--name s1 --ip 198.18.100.1\n", wantErr: "regs.txt:3: --backend is missing"},
		{name: "value missing at the end", in: "--name s1 --backend 198.19.0.2 --ip\n", wantErr: "regs.txt:1: --ip: missing its value"},
		{name: "empty value", in: "--name= --ip 198.18.100.1 --backend 198.19.0.2\n", wantErr: "regs.txt:1: --name: empty value"},
		{name: "flag twice", in: "--name s1 --name s2 --backend 198.19.0.2\n", wantErr: "regs.txt:1: --name given twice"},
		{name: "bad port", in: "--name s1 --port http --backend 198.19.0.2\n", wantErr: `regs.txt:1: --port "http"`},
		{name: "port out of range", in: "--name s1 --port 0 --backend 198.19.0.2\n", wantErr: `regs.txt:1: --port "0"`},
		{name: "bad ttl", in: "--name s1 --ip 198.18.100.1 --backend 198.19.0.2 --ttl soon\n", wantErr: `regs.txt:1: --ttl "soon"`},
		{name: "bad proxy protocol", in: "--name s1 --ip 198.18.100.1 --backend 198.19.0.2 --proxy-protocol v3\n", wantErr: `regs.txt:1: --proxy-protocol "v3"`},
		{name: "not a flag", in: "s1 198.18.100.1 198.19.0.2\n", wantErr: `regs.txt:1: "s1": want --flag VALUE`},
		{name: "empty", in: "# nothing\n\n", wantErr: "regs.txt: no registrations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "regs.txt")
			if err := os.WriteFile(path, []byte(tc.in), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := readRegFile(path, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), filepath.Dir(path)+"/"+tc.wantErr) {
					t.Fatalf("readRegFile() = %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readRegFile() = %v", err)
			}
			if d := cmp.Diff(tc.want, f.regs); d != "" {
				t.Errorf("registrations (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantLines, f.lines); d != "" {
				t.Errorf("lines (-want +got):\n%s", d)
			}
		})
	}
}

func TestRegFileStdinAndExplain(t *testing.T) {
	f, err := readRegFile("-", strings.NewReader("--name s1 --ip 198.18.100.1 --backend 198.19.0.2\n\n--name s2 --ip 198.18.100.2 --backend nowhere\n"))
	if err != nil || len(f.regs) != 2 {
		t.Fatalf("readRegFile(-) = %v, %v; want 2 registrations", f, err)
	}
	apiErr := &control.APIError{Code: 400, Field: "registrations[1].backend", Message: `"nowhere" is not HOST or HOST:PORT`}
	got := f.explain(apiErr).Error()
	if want := `-:3: 400 Bad Request: backend: "nowhere" is not HOST or HOST:PORT (nothing of the file was registered)`; got != want {
		t.Errorf("explain() = %q, want %q", got, want)
	}
	other := errors.New("cannot reach gateway")
	if got := f.explain(other); got != other {
		t.Errorf("explain(%v) = %v, want it unchanged", other, got)
	}
}

// FuzzReadRegFile: any file is either refused with an error or parsed into
// registrations that each have a name and a backend, one per non-blank
// line; it never panics.
func FuzzReadRegFile(f *testing.F) {
	for _, seed := range []string{
		"--name s1 --ip 198.18.100.1 --backend 198.19.0.2\n",
		"vipmux register --name=s1 --port 80 --backend 198.19.0.2:80 --ttl 1m --proxy-protocol v2 # c\n\n",
		"--name\n", "-", "--=x", "--name s1 --backend b --port 99999\n", "#only\n", "\x00\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rf, err := readRegFile("-", strings.NewReader(in))
		if err != nil {
			return
		}
		if len(rf.regs) == 0 || len(rf.regs) != len(rf.lines) {
			t.Fatalf("readRegFile(%q) = %d registrations, %d lines, nil", in, len(rf.regs), len(rf.lines))
		}
		for i, r := range rf.regs {
			if r.Name == "" || r.Backend == "" {
				t.Errorf("readRegFile(%q): registration %d %+v lacks a name or a backend", in, i, r)
			}
		}
	})
}
