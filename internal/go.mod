module stagesub.dev/internal

go 1.26
