"""The cvmfs.io static site generator.

``build.build_site(site_dir, out_dir)`` turns ``site/`` (config, Markdown content with front matter, data
files, jinja2 templates, static assets) into a static site; ``check.check_site`` verifies its links;
``serve.serve`` previews it; ``publish.publish`` puts it into S3 through the mirror engine.
"""
