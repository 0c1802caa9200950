package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/control"
)

// scaleStatus is a status with two mode-1 bindings and a mode-2 port
// whose active member is down.
func scaleStatus() control.Status {
	return control.Status{
		Shared: "198.18.0.100",
		Bindings: []control.BindingView{
			{IP: "198.18.0.10", Members: []control.MemberView{{Name: "web-a", Backend: "198.19.0.2", State: "active"}}},
			{IP: "198.18.0.11", Members: []control.MemberView{{Name: "web-b", Backend: "198.19.0.3", State: "active"}}},
			{IP: "198.18.0.100", Port: 80, Members: []control.MemberView{
				{Name: "web-a", Backend: "198.19.0.2:80", State: "active"},
				{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Down: true},
			}},
			{IP: "198.18.0.100", Port: 443, Members: []control.MemberView{
				{Name: "web-a", Backend: "198.19.0.2:443", State: "active", Down: true},
				{Name: "web-b", Backend: "198.19.0.3:443", State: "standby"},
			}},
		},
		Summary: control.Summary{Bindings: 4, Members: 6, Down: 2, Draining: 1, HeldIPs: 3},
	}
}

func TestStatusFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter statusFilter
		want   []string // "IP:PORT NAME" of the rows kept
	}{
		{"none", statusFilter{}, []string{"198.18.0.10:0 web-a", "198.18.0.11:0 web-b", "198.18.0.100:80 web-a", "198.18.0.100:80 web-b", "198.18.0.100:443 web-a", "198.18.0.100:443 web-b"}},
		{"ip", statusFilter{ip: "198.18.0.11"}, []string{"198.18.0.11:0 web-b"}},
		{"port", statusFilter{port: 443}, []string{"198.18.0.100:443 web-a", "198.18.0.100:443 web-b"}},
		{"name", statusFilter{name: "web-b"}, []string{"198.18.0.11:0 web-b", "198.18.0.100:80 web-b", "198.18.0.100:443 web-b"}},
		{"ip and port", statusFilter{ip: "198.18.0.100", port: 80}, []string{"198.18.0.100:80 web-a", "198.18.0.100:80 web-b"}},
		// A down member, and every member of a binding that serves nobody.
		{"down", statusFilter{down: true}, []string{"198.18.0.100:80 web-b", "198.18.0.100:443 web-a", "198.18.0.100:443 web-b"}},
		{"down and name", statusFilter{down: true, name: "web-a"}, []string{"198.18.0.100:443 web-a"}},
		{"nothing matches", statusFilter{ip: "198.18.0.99"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.filter.apply(scaleStatus())
			var got []string
			for _, b := range s.Bindings {
				for _, m := range b.Members {
					got = append(got, b.IP+":"+strconv.Itoa(b.Port)+" "+m.Name)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("filter %+v (-want +got):\n%s", tc.filter, diff)
			}
			if s.Summary != scaleStatus().Summary {
				t.Errorf("filter %+v changed the summary to %+v; it counts the whole table", tc.filter, s.Summary)
			}
		})
	}
}

func TestPrintStatusSummaryAndHealth(t *testing.T) {
	tests := []struct {
		name      string
		status    control.Status
		wantLines []string
	}{
		{
			name:   "whole table",
			status: scaleStatus(),
			wantLines: []string{
				"4 bindings, 6 members, 2 down, 1 draining, 3 held IPs",
				"shared address 198.18.0.100",
			},
		},
		{
			name:      "filtered to nothing",
			status:    statusFilter{ip: "198.18.0.99"}.apply(scaleStatus()),
			wantLines: []string{"4 bindings, 6 members, 2 down, 1 draining, 3 held IPs", "shared address 198.18.0.100", "no binding matches the filters"},
		},
		{
			name:      "empty table",
			status:    control.Status{},
			wantLines: []string{"0 bindings, 0 members, 0 down, 0 draining, 0 held IPs", "no bindings: nothing registered"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printStatus(&buf, tc.status, time.Now()); err != nil {
				t.Fatalf("printStatus: %v", err)
			}
			lines := strings.Split(buf.String(), "\n")
			for i, want := range tc.wantLines {
				if i >= len(lines) || lines[i] != want {
					t.Errorf("printStatus line %d = %q, want %q:\n%s", i, lines[min(i, len(lines)-1)], want, buf.String())
				}
			}
		})
	}

	// HEALTH: "-" for mode-1 rows, up/down for mode 2.
	var buf bytes.Buffer
	if err := printStatus(&buf, scaleStatus(), time.Now()); err != nil {
		t.Fatal(err)
	}
	health := map[string]string{}
	var col int
	for _, line := range strings.Split(buf.String(), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "IP" {
			for i, h := range f {
				if h == "HEALTH" {
					col = i
				}
			}
			continue
		}
		if col > 0 && len(f) > col && (f[2] == "active" || f[2] == "standby") {
			health[f[0]+":"+f[1]+" "+f[3]] = f[col]
		}
	}
	want := map[string]string{
		"198.18.0.10:* web-a": "-", "198.18.0.11:* web-b": "-",
		"198.18.0.100:80 web-a": "up", "198.18.0.100:80 web-b": "down",
		"198.18.0.100:443 web-a": "down", "198.18.0.100:443 web-b": "up",
	}
	if diff := cmp.Diff(want, health); diff != "" {
		t.Errorf("HEALTH column (-want +got):\n%s\n%s", diff, buf.String())
	}
}
