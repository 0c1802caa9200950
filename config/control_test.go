package config

import (
	"errors"
	"strings"
	"testing"
)

// TestControlExposed: serve refuses a control API that listens beyond
// loopback without a token, unless [control] insecure = true says so on
// purpose (issue 12, point 4). The error names control.listen and says
// which key to set.
func TestControlExposed(t *testing.T) {
	tests := []struct {
		name    string
		control string // the [control] table's keys
		wantErr bool
	}{
		{name: "default listen", control: ``},
		{name: "IPv4 loopback", control: `listen = "127.0.0.1:7070"`},
		{name: "anywhere in 127/8", control: `listen = "127.0.0.2:7070"`},
		{name: "IPv6 loopback", control: `listen = "[::1]:7070"`},
		{name: "localhost", control: `listen = "localhost:7070"`},
		{name: "every interface", control: `listen = "0.0.0.0:7070"`, wantErr: true},
		{name: "every interface, no host", control: `listen = ":7070"`, wantErr: true},
		{name: "every IPv6 interface", control: `listen = "[::]:7070"`, wantErr: true},
		{name: "a back-side address", control: `listen = "198.19.0.1:7070"`, wantErr: true},
		{name: "a host name", control: `listen = "gw.example:7070"`, wantErr: true},
		{name: "with a token", control: "listen = \"198.19.0.1:7070\"\ntoken_file = \"/etc/vipmux/token\""},
		{name: "insecure on purpose", control: "listen = \"198.19.0.1:7070\"\ninsecure = true"},
		{name: "insecure false", control: "listen = \"198.19.0.1:7070\"\ninsecure = false", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + "\n[control]\n" + tc.control + "\n"))
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Parse: %v, want nil", err)
				}
				return
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "control.listen" {
				t.Fatalf("Parse = %v, want a KeyError for control.listen", err)
			}
			for _, want := range []string{"not a loopback address", "token_file", "insecure = true"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Parse error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestControlTLSKeys: tls_cert and tls_key come together; the one that is
// missing is named.
func TestControlTLSKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		control string
		wantKey string // "" for valid
	}{
		{name: "neither", control: ``},
		{name: "both", control: "tls_cert = \"/etc/vipmux/api.pem\"\ntls_key = \"/etc/vipmux/api.key\""},
		{name: "cert alone", control: `tls_cert = "/etc/vipmux/api.pem"`, wantKey: "control.tls_key"},
		{name: "key alone", control: `tls_key = "/etc/vipmux/api.key"`, wantKey: "control.tls_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + "\n[control]\n" + tc.control + "\n"))
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Parse: %v, want nil", err)
				}
				return
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tc.wantKey {
				t.Errorf("Parse = %v, want a KeyError for %s", err, tc.wantKey)
			}
		})
	}
}
