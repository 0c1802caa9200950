package config

import (
	"os"
	"testing"
)

// FuzzParse checks that Parse never panics, and that a configuration it
// accepts is one that Validate accepts too.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(""))
	f.Add([]byte("[nic]\nnetworks = [\"198.18.0.0/33\"]\nmac = \"zz\"\n"))
	f.Add([]byte(minimal + "router = \"198.18.0.1\"\n[shared]\naddress = \"198.18.0.100\"\n[dispatch]\ndial_timeout = \"1s\"\n"))
	f.Add([]byte("[nic\n"))
	f.Add([]byte("a.b.c = 1\n[[x]]\n"))
	if data, err := os.ReadFile("../config.example.toml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse() = %+v with error %v; want nil config on error", c, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse() accepted %q but Validate() = %v", data, err)
		}
	})
}
