// Command backend is a small backend in the shape the instancelock library
// is made for: an SQLite database in WAL mode, a few background agents that
// write to it, and an HTTP API, all of which a second copy of the process
// would corrupt or fight over. It takes the instance lock before anything
// else, and shuts down in order on SIGTERM or SIGINT.
//
//	cd examples/backend && go run .
//
// With -lock postgres://… or -lock redis://… it is one member of a fleet:
// every member serves HTTP, and only the holder of the fleet lock runs the
// agents (see docs/fleet.md).
//
// See README.md for the flags, the environment, the exit codes and the API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/redislock"
)

// Exit codes. A forced exit on a second signal is 128+signal (130 for
// SIGINT, 143 for SIGTERM), done by instancelock.GracefulShutdown.
const (
	exitOK    = 0 // clean shutdown
	exitError = 1 // another instance holds the lock, the port is taken, or startup or shutdown failed
	exitUsage = 2 // bad flags or environment
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// config is the parsed command line.
type config struct {
	PIDFile         string
	Addr            string
	Port            int // the port of Addr
	DB              string
	Agents          int
	ShutdownTimeout time.Duration
	Drain           time.Duration // readiness answers 503 this long before the hooks run
	Warmup          time.Duration // development: time between binding the port and being ready
	AgentInterval   time.Duration // development: how often each agent writes
	Lock            string        // URL of the fleet lock; "" for none
	LockTTL         time.Duration // development: the lease TTL of a redis:// lock; 0 for its default
	Debug           bool
}

// checkTimeout bounds each run of a health check; a readiness probe whose
// cached result expired may wait this long (docs/operators.md sets the
// Kubernetes probes' timeoutSeconds above it).
const checkTimeout = 2 * time.Second

const (
	defaultPIDFile = "./data/backend.pid"
	defaultHost    = "127.0.0.1"
	defaultPort    = 3000
)

// parseConfig reads the flags in args and the environment through getenv.
// Flags win over the environment: PID_FILE_PATH is the default of -pidfile
// and PORT the port of the default -addr.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)

	pidDefault := defaultPIDFile
	if p := getenv(instancelock.EnvPath); p != "" {
		pidDefault = p
	}
	port := defaultPort
	if p := getenv("PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			fmt.Fprintf(stderr, "invalid PORT=%q: want a port number 0..65535\n", p)
			return c, fmt.Errorf("invalid PORT %q", p)
		}
		port = n
	}
	fs.StringVar(&c.PIDFile, "pidfile", pidDefault, "`path` of the PID file (env "+instancelock.EnvPath+")")
	fs.StringVar(&c.Addr, "addr", net.JoinHostPort(defaultHost, strconv.Itoa(port)), "`host:port` to serve on (env PORT sets the port)")
	fs.StringVar(&c.DB, "db", "", "`path` of the SQLite database (default backend.db next to the PID file)")
	fs.IntVar(&c.Agents, "agents", 2, "number of agents started at boot")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "overall deadline of the shutdown steps")
	fs.DurationVar(&c.Drain, "drain", 0, "after a shutdown signal, answer 503 on readiness this long before stopping, so load balancers stop sending requests")
	fs.DurationVar(&c.Warmup, "warmup", 0, "development: wait this long after binding the port before starting agents and becoming ready")
	fs.DurationVar(&c.AgentInterval, "agent-interval", time.Second, "development: how often each agent writes a message")
	fs.StringVar(&c.Lock, "lock", getenv("LOCK_URL"), "`URL` of a fleet lock, postgres://… or redis://… (env LOCK_URL): only its holder runs agents")
	fs.DurationVar(&c.LockTTL, "lock-ttl", 0, "development: the lease TTL of a redis:// -lock (default 10s)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: backend [flags]\n\n"+
			"A single-instance backend: SQLite (WAL) + background agents + HTTP API.\n"+
			"With -lock, one member of a fleet: only the holder of the fleet lock runs agents.\n\n"+
			"Environment: %s (PID file), PORT (port of the default -addr), LOCK_URL (default of -lock),\n"+
			"%s=true (debug logs).\n"+
			"Exit codes: 0 clean shutdown; 1 another instance running, port taken, or failure;\n"+
			"2 bad usage; 130/143 forced by a second SIGINT/SIGTERM.\n\nFlags:\n",
			instancelock.EnvPath, instancelock.EnvDebug)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %q\n", fs.Args())
		return c, errors.New("unexpected arguments")
	}
	_, p, err := net.SplitHostPort(c.Addr)
	if err == nil {
		c.Port, err = strconv.Atoi(p)
		if err == nil && (c.Port < 0 || c.Port > 65535) {
			err = errors.New("port outside 0..65535")
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "invalid -addr %q: want host:port, for example %s:%d (%v)\n", c.Addr, defaultHost, defaultPort, err)
		return c, err
	}
	var bad []string
	if msg := blankPIDFile(fs, c.PIDFile); msg != "" {
		bad = append(bad, msg)
	}
	if c.Agents < 0 {
		bad = append(bad, "-agents must be 0 or more")
	}
	if c.ShutdownTimeout <= 0 {
		bad = append(bad, "-shutdown-timeout must be positive")
	}
	if c.Drain < 0 || c.Warmup < 0 {
		bad = append(bad, "-drain and -warmup must not be negative")
	}
	if c.AgentInterval < time.Millisecond {
		bad = append(bad, "-agent-interval must be at least 1ms")
	}
	scheme := lockScheme(c.Lock)
	if c.Lock != "" && scheme == "" {
		bad = append(bad, "invalid -lock (or LOCK_URL): want postgres://…, postgresql://…, redis://… or rediss://…, or nothing for the PID-file lock only")
	}
	if c.LockTTL != 0 && scheme != "redis" {
		bad = append(bad, "-lock-ttl applies to a redis:// -lock only")
	} else if c.LockTTL != 0 && c.LockTTL < redislock.MinTTL {
		bad = append(bad, fmt.Sprintf("-lock-ttl must be at least %v", redislock.MinTTL))
	}
	if len(bad) > 0 {
		fmt.Fprintln(stderr, strings.Join(bad, "\n"))
		return c, errors.New(strings.Join(bad, "; "))
	}
	if c.DB == "" {
		c.DB = filepath.Join(filepath.Dir(c.PIDFile), "backend.db")
	}
	c.Debug = getenv(instancelock.EnvDebug) == "true"
	return c, nil
}

// blankPIDFile returns the complaint about a PID file path that is empty
// or only blanks (an unset shell variable: -pidfile "$PIDFILE "), naming
// where it came from, or "" when the path may be used. Such a path would
// run an instance that instancelock status and stop refuse to look at
// (the same check as theirs).
func blankPIDFile(fs *flag.FlagSet, path string) string {
	if strings.TrimSpace(path) != "" {
		return ""
	}
	what, instead := "-pidfile", "give the PID file's path, or leave -pidfile out"
	fromFlag := false
	fs.Visit(func(f *flag.Flag) { fromFlag = fromFlag || f.Name == "pidfile" })
	if !fromFlag {
		what, instead = instancelock.EnvPath, "give the PID file's path, or unset "+instancelock.EnvPath
	}
	word := "empty"
	if path != "" {
		word = fmt.Sprintf("only blanks, %q", path)
	}
	return fmt.Sprintf("%s is %s (an unset shell variable?): %s (default %s)", what, word, instead, defaultPIDFile)
}

// run is the whole program; it returns the exit code.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var spec *lockSpec
	if cfg.Lock != "" {
		s, err := newLockSpec(cfg, log)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		spec = &s
	}

	// 1. The lock, before the database is opened or the port bound: a
	// second instance must not touch either.
	lk, err := instancelock.New(cfg.PIDFile)
	if err == nil {
		lk.Port, lk.Logger = cfg.Port, log // Port 0 records none
		err = lk.TryLock()
	}
	if are := (*instancelock.AlreadyRunningError)(nil); errors.As(err, &are) {
		fmt.Fprint(stderr, are.Help("")) // "go run ." when started that way
		return exitError
	}
	if err != nil {
		log.Error("cannot take the instance lock", "pidfile", cfg.PIDFile, "err", err)
		return exitError
	}

	// 2. From here on the shutdown helper owns the lock: every way out goes
	// through it, so the hooks run and the lock is released last. Nothing
	// is logged before Start: Start notifies SIGPIPE, and until then a log
	// line written to a closed pipe (backend 2>&1 | true) would kill the
	// process with its PID file left behind.
	g := instancelock.NewGracefulShutdown(lk)
	g.Timeout, g.DrainDelay, g.Logger = cfg.ShutdownTimeout, cfg.Drain, log
	if err := g.Start(context.Background()); err != nil {
		log.Error("cannot start the shutdown handler", "err", err)
		g.Shutdown(err)
		return exitError
	}
	info, _ := lk.Info()
	log.Info("lock acquired", "pidfile", lk.Path(), "pid", info.PID, "instance", lk.InstanceID())
	if err := startup(cfg, spec, g, lk, log, stderr); err != nil {
		if g.Context().Err() != nil {
			// A signal came during startup: an ordinary shutdown.
			return g.ExitCode()
		}
		log.Error("startup failed", "err", err)
		g.Shutdown(err)
		return exitError
	}
	return g.ExitCode()
}

// startup opens the database, starts the agents and the HTTP server and
// marks the instance ready, registering a shutdown hook for each step as it
// succeeds. Hooks run in reverse order, so the shutdown is: HTTP server,
// agents, (the fleet lock,) database; then GracefulShutdown releases the
// PID-file lock.
//
// With a fleet lock (spec not nil) the agents are not started here: the
// Fleet starts them when this instance gets the fleet lock, and stops them
// when it loses it.
func startup(cfg config, spec *lockSpec, g *instancelock.GracefulShutdown, lk *instancelock.Locker, log *slog.Logger, stderr io.Writer) error {
	ctx := g.Context() // cancelled if a signal comes during startup

	db, err := OpenDB(ctx, cfg.DB)
	if err != nil {
		return err
	}
	log.Info("database opened", "path", db.Path(), "journal", "wal")
	g.Add("close database", func(ctx context.Context) error {
		frames, err := db.Close(ctx)
		if err != nil {
			return err
		}
		log.Info("database closed", "path", db.Path(), "checkpointed", frames)
		return nil
	})

	orch := NewOrchestrator(db, os.Getpid(), lk.InstanceID(), cfg.AgentInterval, log)
	var fleet *Fleet
	if spec != nil {
		// Registered before "stop agents", so it runs after it: the fleet
		// lock is released once no agent writes.
		fleet = NewFleet(*spec, orch, cfg.Agents, log)
		g.Add("release fleet lock", fleet.Release)
	}
	g.Add("stop agents", func(ctx context.Context) error {
		if err := orch.StopAll(ctx); err != nil {
			return err
		}
		log.Info("agents stopped", "total", orch.Total())
		return nil
	})

	health := instancelock.NewHealth(g.State(), lk)
	health.AddCounter("activeAgents", orch.Active)
	health.AddCounter("totalAgents", orch.Total)
	health.AddCheck(instancelock.Check{Name: "databaseStatus", Run: db.Ping, Timeout: checkTimeout,
		Pass: "connected", Fail: "disconnected"})
	health.AddCheck(instancelock.Check{Name: "databaseFile", Run: db.CheckFile, Critical: true,
		Pass: "open", Fail: "replaced"})
	if fleet != nil {
		health.AddCounter("orchestratorActive", fleet.Active)
		health.AddCounter("fenceToken", fleet.Fence)
		health.AddCheck(instancelock.Check{Name: "fleetLock", Run: fleet.Check, Timeout: checkTimeout,
			Optional: true, Pass: "reachable", Fail: "unreachable"})
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		reportListenError(stderr, cfg, lk.Path(), err)
		return fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler: withMetrics(routes(NewAPI(orch, db, fleet, log), probes{
			health: health, ready: health.Readiness(), live: health.Liveness(),
		}), metricsHandler(g, lk, health, fleet)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	g.Add("http server", func(ctx context.Context) error {
		err := srv.Shutdown(ctx) // stops accepting, closes idle connections, waits for requests
		if err != nil {
			srv.Close()
			return err
		}
		log.Info("http server stopped")
		return nil
	})
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server failed", "err", err)
			g.Shutdown(fmt.Errorf("http server: %w", err))
		}
	}()
	log.Info("listening", "addr", ln.Addr().String())

	if cfg.Warmup > 0 {
		log.Info("warming up", "delay", cfg.Warmup)
		t := time.NewTimer(cfg.Warmup)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
	if fleet == nil {
		for range cfg.Agents {
			if _, err := orch.Start(""); err != nil {
				return err
			}
		}
	}
	if fleet != nil {
		// Ready only once the fleet lock's server was tried: a member
		// whose lock server answers reports "reachable" from its first
		// health answer on; one that cannot reach it is ready anyway
		// (it serves as a standby) and reports why.
		fleet.Start(ctx)
		if err := fleet.WaitFirstAttempt(ctx); err != nil {
			return err
		}
	}
	if err := g.State().Set(instancelock.StatusRunning); err != nil {
		return context.Cause(ctx) // the shutdown began meanwhile
	}
	attrs := []any{"addr", ln.Addr().String(), "url", "http://" + ln.Addr().String() + "/api/health",
		"pid", os.Getpid(), "pidfile", lk.Path(), "db", db.Path(), "agents", cfg.Agents}
	if fleet != nil {
		attrs = append(attrs, "lock", spec.desc)
	}
	log.Info("ready", attrs...)
	return nil
}

// reportListenError explains on stderr why the port could not be bound.
func reportListenError(w io.Writer, cfg config, pidfile string, err error) {
	if !errors.Is(err, syscall.EADDRINUSE) {
		fmt.Fprintf(w, "\nCannot listen on %s: %v\n\n", cfg.Addr, err)
		return
	}
	other := net.JoinHostPort(hostOf(cfg.Addr), strconv.Itoa(cfg.Port%65535+1))
	fmt.Fprintf(w, "\n"+
		"Port %d is already in use by another program (cannot listen on %s).\n"+
		"It is not an instance of this backend using %s: this process holds that lock.\n"+
		"\n"+
		"To see what uses the port:  ss -ltnp 'sport = :%d'   (or: lsof -i :%d)\n"+
		"To use another port:        -addr %s   (or PORT=%d when -addr is not given)\n\n",
		cfg.Port, cfg.Addr, pidfile, cfg.Port, cfg.Port, other, cfg.Port%65535+1)
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}
