package bench

import (
	_ "github.com/ad5dec64/instancelock"
	_ "github.com/alexliesenfeld/health"
	_ "github.com/gofrs/flock"
	_ "github.com/hellofresh/health-go/v5"
	_ "github.com/nightlyone/lockfile"
)
