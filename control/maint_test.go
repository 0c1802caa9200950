package control

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMaint(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		token     string
		wantCode  int
		wantField string
		// wantStates are "ip:port name=state/down_cause" of the answer.
		wantStates []string
	}{
		{name: "maint everywhere", body: `{"name":"web-a","state":"maint"}`, token: testToken, wantCode: 200,
			wantStates: []string{"198.18.0.10:0 web-a=active/maint", "198.18.0.100:80 web-a=standby/maint", "198.18.0.100:80 web-b=active/"}},
		{name: "maint one port", body: `{"name":"web-b","port":80,"state":"maint"}`, token: testToken, wantCode: 200,
			wantStates: []string{"198.18.0.100:80 web-a=active/", "198.18.0.100:80 web-b=standby/maint"}},
		{name: "ready", body: `{"name":"web-a","state":"ready"}`, token: testToken, wantCode: 200,
			wantStates: []string{"198.18.0.10:0 web-a=active/", "198.18.0.100:80 web-a=active/", "198.18.0.100:80 web-b=standby/"}},
		{name: "no token", body: `{"name":"web-a","state":"maint"}`, wantCode: 401},
		{name: "bad state", body: `{"name":"web-a","state":"drain"}`, token: testToken, wantCode: 400, wantField: "state"},
		{name: "no state", body: `{"name":"web-a"}`, token: testToken, wantCode: 400, wantField: "state"},
		{name: "bad port", body: `{"name":"web-a","port":70000,"state":"maint"}`, token: testToken, wantCode: 400, wantField: "port"},
		{name: "unknown member", body: `{"name":"web-z","state":"maint"}`, token: testToken, wantCode: 404, wantField: "name"},
		{name: "unknown port", body: `{"name":"web-a","port":81,"state":"maint"}`, token: testToken, wantCode: 404, wantField: "port"},
		{name: "bad name", body: `{"name":"a b","state":"maint"}`, token: testToken, wantCode: 400, wantField: "name"},
		{name: "unknown field", body: `{"name":"web-a","state":"maint","x":1}`, token: testToken, wantCode: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, func(o *Options) { o.Token = testToken })
			before := tableJSON(t, reg)
			rec := do(h, http.MethodPost, PathMaint, tc.body, tc.token)
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s %s = %d %s, want %d", PathMaint, tc.body, rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantCode != 200 {
				if tc.wantField != "" {
					checkErrorBody(t, rec, tc.wantField)
				}
				if after := tableJSON(t, reg); after != before {
					t.Errorf("a refused request changed the table:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			var res MaintResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatalf("answer %s: %v", rec.Body, err)
			}
			var got []string
			for _, b := range res.Bindings {
				for _, m := range b.Members {
					got = append(got, b.IP+":"+itoa(b.Port)+" "+m.Name+"="+m.State+"/"+m.DownCause)
				}
			}
			if diff := cmp.Diff(tc.wantStates, got); diff != "" {
				t.Errorf("POST %s %s (-want +got):\n%s", PathMaint, tc.body, diff)
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
