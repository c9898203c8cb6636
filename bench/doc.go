// Package bench holds benchmarks that compare instancelock with other
// libraries side by side in one run. It is its own module so that those
// libraries stay out of instancelock's dependencies.
package bench
