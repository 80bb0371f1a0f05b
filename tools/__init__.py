"""Build helpers of the course (executing notebooks, the static HTML build). Not part of the package."""
