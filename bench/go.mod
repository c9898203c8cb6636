module github.com/ad5dec64/instancelock/bench

go 1.26.0

replace github.com/ad5dec64/instancelock => ../

require (
	github.com/ad5dec64/instancelock v0.0.0-00010101000000-000000000000
	github.com/alexliesenfeld/health v0.8.0
	github.com/gofrs/flock v0.13.2
	github.com/hellofresh/health-go/v5 v5.5.4
	github.com/nightlyone/lockfile v1.0.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	go.opentelemetry.io/otel v1.35.0 // indirect
	go.opentelemetry.io/otel/trace v1.35.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
