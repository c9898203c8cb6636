package main

import (
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{PIDFile: "./data/backend.pid", Addr: "127.0.0.1:3000", Port: 3000, DB: filepath.Join("data", "backend.db"),
		Agents: 2, ShutdownTimeout: 5 * time.Second, AgentInterval: time.Second}
	if c != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseConfigFlagsAndEnv(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		check func(config) bool
	}{
		{"PID_FILE_PATH moves the PID file and the database", nil, []string{"PID_FILE_PATH=/srv/app/run.pid"},
			func(c config) bool {
				return c.PIDFile == "/srv/app/run.pid" && c.DB == filepath.Join("/srv/app", "backend.db")
			}},
		{"-pidfile wins over PID_FILE_PATH", []string{"-pidfile", "/a/b.pid"}, []string{"PID_FILE_PATH=/srv/app/run.pid"},
			func(c config) bool { return c.PIDFile == "/a/b.pid" && c.DB == filepath.Join("/a", "backend.db") }},
		{"-db is used as given", []string{"-db", "/tmp/x.db"}, nil,
			func(c config) bool { return c.DB == "/tmp/x.db" && c.PIDFile == "./data/backend.pid" }},
		{"PORT sets the port of the default address", nil, []string{"PORT=4001"},
			func(c config) bool { return c.Addr == "127.0.0.1:4001" && c.Port == 4001 }},
		{"-addr wins over PORT", []string{"-addr", "0.0.0.0:5000"}, []string{"PORT=4001"},
			func(c config) bool { return c.Addr == "0.0.0.0:5000" && c.Port == 5000 }},
		{"IPv6 address", []string{"-addr", "[::1]:3001"}, nil,
			func(c config) bool { return c.Port == 3001 }},
		{"PROCESS_MANAGER_DEBUG=true turns on debug", nil, []string{"PROCESS_MANAGER_DEBUG=true"},
			func(c config) bool { return c.Debug }},
		{"PROCESS_MANAGER_DEBUG=1 does not", nil, []string{"PROCESS_MANAGER_DEBUG=1"},
			func(c config) bool { return !c.Debug }},
		{"LOCK_URL is the default of -lock", nil, []string{"LOCK_URL=redis://127.0.0.1:6379"},
			func(c config) bool { return c.Lock == "redis://127.0.0.1:6379" && c.LockTTL == 0 }},
		{"-lock wins over LOCK_URL", []string{"-lock", "postgresql://db/app"}, []string{"LOCK_URL=redis://127.0.0.1:6379"},
			func(c config) bool { return c.Lock == "postgresql://db/app" }},
		{"-lock-ttl with redis", []string{"-lock", "rediss://cache:6380", "-lock-ttl", "2s"}, nil,
			func(c config) bool { return c.Lock == "rediss://cache:6380" && c.LockTTL == 2*time.Second }},
		{"all the flags", []string{"-agents", "0", "-shutdown-timeout", "30s", "-drain", "2s", "-warmup", "1s", "-agent-interval", "10ms"}, nil,
			func(c config) bool {
				return c.Agents == 0 && c.ShutdownTimeout == 30*time.Second && c.Drain == 2*time.Second &&
					c.Warmup == time.Second && c.AgentInterval == 10*time.Millisecond
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, envOf(tc.env...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("%+v", c)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		msg  string
	}{
		{nil, []string{"PORT=http"}, `invalid PORT="http"`},
		{nil, []string{"PORT=70000"}, `invalid PORT="70000"`},
		{[]string{"-addr", "localhost"}, nil, `invalid -addr "localhost"`},
		{[]string{"-addr", "127.0.0.1:99999"}, nil, `invalid -addr`},
		{[]string{"-agents", "-1"}, nil, "-agents must be 0 or more"},
		{[]string{"-shutdown-timeout", "0s"}, nil, "-shutdown-timeout must be positive"},
		{[]string{"-drain", "-1s"}, nil, "must not be negative"},
		{[]string{"-agent-interval", "0s"}, nil, "-agent-interval must be at least 1ms"},
		{[]string{"-pidfile", ""}, nil, "-pidfile is empty (an unset shell variable?): give the PID file's path, or leave -pidfile out"},
		{[]string{"-pidfile", " "}, nil, `-pidfile is only blanks, " " (an unset shell variable?)`},
		{[]string{"-pidfile= \t"}, []string{"PID_FILE_PATH=/srv/app/run.pid"}, `-pidfile is only blanks, " \t"`},
		{nil, []string{"PID_FILE_PATH= "}, `PID_FILE_PATH is only blanks, " " (an unset shell variable?): give the PID file's path, or unset PID_FILE_PATH`},
		{[]string{"serve"}, nil, "unexpected arguments"},
		{[]string{"-lock", "mysql://db/app"}, nil, "invalid -lock (or LOCK_URL): want postgres://"},
		{nil, []string{"LOCK_URL=127.0.0.1:6379"}, "invalid -lock (or LOCK_URL)"},
		{[]string{"-lock-ttl", "2s"}, nil, "-lock-ttl applies to a redis:// -lock only"},
		{[]string{"-lock", "postgres://db/app", "-lock-ttl", "2s"}, nil, "-lock-ttl applies to a redis:// -lock only"},
		{[]string{"-lock", "redis://cache", "-lock-ttl", "10ms"}, nil, "-lock-ttl must be at least 50ms"},
		{[]string{"-nope"}, nil, "flag provided but not defined: -nope"},
	} {
		var out strings.Builder
		_, err := parseConfig(tc.args, envOf(tc.env...), &out)
		if err == nil || !strings.Contains(out.String(), tc.msg) {
			t.Errorf("args %q env %q: err %v, output %q; want an error saying %q", tc.args, tc.env, err, out.String(), tc.msg)
		}
		if code := run(tc.args, envOf(tc.env...), io.Discard); code != exitUsage {
			t.Errorf("run(%q) = %d; want %d", tc.args, code, exitUsage)
		}
	}
	var out strings.Builder
	if _, err := parseConfig([]string{"-h"}, envOf(), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"Usage: backend", "PID_FILE_PATH", "PORT", "PROCESS_MANAGER_DEBUG", "Exit codes", "-shutdown-timeout", "-drain", "-lock", "LOCK_URL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if code := run([]string{"-h"}, envOf(), io.Discard); code != exitOK {
		t.Errorf("run(-h) = %d; want 0", code)
	}
}

func TestReportListenError(t *testing.T) {
	var out strings.Builder
	reportListenError(&out, config{Addr: "127.0.0.1:80", Port: 80}, "data/backend.pid", errors.New("bind: permission denied"))
	if !strings.Contains(out.String(), "Cannot listen on 127.0.0.1:80: bind: permission denied") {
		t.Fatalf("got %q", out.String())
	}
}
