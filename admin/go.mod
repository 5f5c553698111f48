module stagesub.dev/admin

go 1.26

require (
	stagesub.dev/registry v0.0.0
	stagesub.dev/app v0.0.0
	stagesub.dev/internal v0.0.0
)

replace (
	stagesub.dev/registry => ../registry
	stagesub.dev/app => ../app
	stagesub.dev/internal => ../internal
)
