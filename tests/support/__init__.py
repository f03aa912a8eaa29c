"""What the tests build and compare with: images and corpora on disk, real models, reference
decodes, and the browser that renders the report."""
