package config

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestPluginConfigExpandsEnvBeforeDecoding(t *testing.T) {
	// Names of this test's own: it does not run in parallel with one
	// setting them.
	t.Setenv("KISFLOW_TEST_PLUGIN_PORT", "6380")
	t.Setenv("KISFLOW_TEST_PLUGIN_PASSWORD", "s3cret")
	set, err := ImportFS(fstest.MapFS{"global.yml": {Data: []byte("kistype: global\nplugins:\n  cache:\n    main:\n" +
		"      port: ${KISFLOW_TEST_PLUGIN_PORT}\n      password: \"${KISFLOW_TEST_PLUGIN_PASSWORD}\"\n      host: ${KISFLOW_TEST_PLUGIN_HOST:-localhost}\n" +
		"  other:\n    x:\n      token: ${KISFLOW_TEST_PLUGIN_UNSET}\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Port     int    `yaml:"port"`
		Password string `yaml:"password"`
		Host     string `yaml:"host"`
	}
	if err := set.Global.Plugin("cache", "main").Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Port != 6380 || c.Password != "s3cret" || c.Host != "localhost" {
		t.Fatalf("decoded %+v", c)
	}
	var o struct {
		Token string `yaml:"token"`
	}
	err = set.Global.Plugin("other", "x").Decode(&o)
	if err == nil || !strings.Contains(err.Error(), "global.yml:10") || !strings.Contains(err.Error(), "KISFLOW_TEST_PLUGIN_UNSET not set") {
		t.Fatalf("an unset variable: %v", err)
	}
}
