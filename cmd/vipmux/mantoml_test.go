package main

import (
	"strings"
	"testing"

	"github.com/vipmux/vipmux"
	"github.com/vipmux/vipmux/config"
)

// TestConfMan: vipmux.toml(5) documents every key of the config, under its
// section, with the comment that config.example.toml gives it.
func TestConfMan(t *testing.T) {
	out, err := runApp("man", "--section", "5")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, ".TH VIPMUX.TOML 5") {
		t.Fatalf("page starts %.40q, want .TH VIPMUX.TOML 5", out)
	}
	_, sections := parseExample(vipmux.ExampleConfig)
	docs := map[string]string{}
	for _, s := range sections {
		for _, k := range s.keys {
			docs[s.name+"."+k.name] = k.doc
		}
	}
	for _, name := range config.Keys() {
		i := strings.LastIndexByte(name, '.')
		section, key := name[:i], name[i+1:]
		doc, ok := docs[name]
		switch {
		case !ok:
			t.Errorf("%s: not in config.example.toml's [%s]", name, section)
		case doc == "":
			t.Errorf("%s: no comment above it in config.example.toml", name)
		}
		at := strings.Index(out, ".SS \"["+section+"]\"")
		if at < 0 {
			t.Errorf("%s: the page has no section [%s]", name, section)
			continue
		}
		if !strings.Contains(out[at:], `\fB`+strings.ReplaceAll(key, "-", `\-`)+" = ") {
			t.Errorf("%s: the page's [%s] has no entry for %s", name, section, key)
		}
	}
	if _, err := runApp("man", "--section", "3"); err == nil || !strings.Contains(err.Error(), "--section 3") {
		t.Errorf("vipmux man --section 3: %v, want an error naming it", err)
	}
}
