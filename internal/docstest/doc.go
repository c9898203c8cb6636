// Package docstest holds TestDocs, which checks that the documentation
// works as printed: every fenced block of README.md and docs/*.md has a
// language, and every command block (```sh) is run in a copy of the
// repository, with the context it needs, and must succeed.
//
// A block's context is given by an HTML comment on the line before its
// fence (invisible when the Markdown is rendered):
//
//	<!-- docs-test: dir=examples/backend backend expect="ready" -->
//
// The keys (all optional):
//
//	dir=PATH         where the block runs, relative to the repository root
//	                 (default: the root)
//	backend[=ARGS]   the example backend, built by the test, runs in dir
//	                 with ARGS (default: none, so port 3000 and
//	                 data/backend.pid) for the block's duration
//	background=N     line N of the block runs in the background (it is a
//	                 server the reader runs in another terminal); the rest
//	                 runs once wait= answers, then line N gets SIGINT
//	                 (Ctrl-C)
//	wait=HOST:PORT   what background= waits for (default 127.0.0.1:3000)
//	module           the block runs in a new Go module that requires this
//	                 repository's module (replace directive, no network)
//	env="K=V ..."    variables added to the environment, to shorten long
//	                 blocks (BENCHTIME=1x, SCRIPTS_TEST_QUICK=1)
//	needs=a,b        programs the block needs; without them the block is
//	                 skipped, except under CI=true, where it fails ("root":
//	                 the block runs as root, as CI does)
//	setup=CMD        a command run before the block (its failure is only
//	                 logged: it clears what an earlier run may have left)
//	cleanup=CMD      a command run after the block, even if it failed
//	keep             what the block started with & keeps running (the next
//	                 blocks use it) until a stopkept block ends
//	stopkept         after this block, end what keep blocks left running
//	expect=REGEXP    the block's output must match
//	noerrexit        run without set -e (the block tests exit statuses)
//	timeout=D        the block's time limit (default 10m)
//
// Fences may also be console (a transcript with output) and sql; neither
// runs.
//
// Every block runs under bash with set -o pipefail (and set -e unless
// noerrexit), in a process group that is killed when the block ends, so
// that what it started with & does not outlive it.
package docstest
