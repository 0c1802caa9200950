package stack

import (
	"testing"
	"time"
)

// TestARPSettingsLimits pins the limits that ARPSettings.check enforces to
// the exported constants, inclusive at both ends, so that config (which
// checks [arp] against the same constants) and the stack agree.
func TestARPSettingsLimits(t *testing.T) {
	ok := ARPSettings{GARPCount: 3, GARPInterval: 200 * time.Millisecond, DADProbes: 2, DADInterval: 100 * time.Millisecond}
	tests := []struct {
		name    string
		edit    func(*ARPSettings)
		wantErr bool
	}{
		{name: "defaults", edit: func(*ARPSettings) {}},
		{name: "no announcements, no probes", edit: func(s *ARPSettings) { *s = ARPSettings{} }},
		{name: "MaxGARPCount", edit: func(s *ARPSettings) { s.GARPCount = MaxGARPCount }},
		{name: "MaxGARPCount+1", edit: func(s *ARPSettings) { s.GARPCount = MaxGARPCount + 1 }, wantErr: true},
		{name: "negative GARPCount", edit: func(s *ARPSettings) { s.GARPCount = -1 }, wantErr: true},
		{name: "MaxDADProbes", edit: func(s *ARPSettings) { s.DADProbes = MaxDADProbes }},
		{name: "MaxDADProbes+1", edit: func(s *ARPSettings) { s.DADProbes = MaxDADProbes + 1 }, wantErr: true},
		{name: "negative DADProbes", edit: func(s *ARPSettings) { s.DADProbes = -1 }, wantErr: true},
		{name: "GARPInterval MinARPInterval", edit: func(s *ARPSettings) { s.GARPInterval = MinARPInterval }},
		{name: "GARPInterval MaxARPInterval", edit: func(s *ARPSettings) { s.GARPInterval = MaxARPInterval }},
		{name: "GARPInterval below", edit: func(s *ARPSettings) { s.GARPInterval = MinARPInterval - 1 }, wantErr: true},
		{name: "GARPInterval above", edit: func(s *ARPSettings) { s.GARPInterval = MaxARPInterval + 1 }, wantErr: true},
		{name: "GARPInterval unused with one announcement", edit: func(s *ARPSettings) { s.GARPCount, s.GARPInterval = 1, 0 }},
		{name: "DADInterval MinARPInterval", edit: func(s *ARPSettings) { s.DADInterval = MinARPInterval }},
		{name: "DADInterval MaxARPInterval", edit: func(s *ARPSettings) { s.DADInterval = MaxARPInterval }},
		{name: "DADInterval below", edit: func(s *ARPSettings) { s.DADInterval = MinARPInterval - 1 }, wantErr: true},
		{name: "DADInterval above", edit: func(s *ARPSettings) { s.DADInterval = MaxARPInterval + 1 }, wantErr: true},
		{name: "DADInterval unused without probes", edit: func(s *ARPSettings) { s.DADProbes, s.DADInterval = 0, 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			if err := s.check(); (err != nil) != tc.wantErr {
				t.Errorf("%+v.check() = %v, want error %v", s, err, tc.wantErr)
			}
		})
	}
}
