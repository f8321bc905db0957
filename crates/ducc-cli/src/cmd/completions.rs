//! `ducc completions SHELL` and `ducc man`: generated from the clap definitions, so they always
//! name the flags `--help` shows (issue 27).

use clap::CommandFactory;

use crate::args::{Cli, CompletionShell, CompletionsArgs};
use crate::exit::{Failure, print_bytes};

/// Runs `ducc completions`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    use clap_complete::Shell;
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "ducc", &mut script);
    print_bytes(&script)
}

/// Runs `ducc man`: one roff page on stdout, `ducc(1)` followed by a section per command.
pub fn man() -> Result<(), Failure> {
    let command = Cli::command();
    let mut page = Vec::new();
    let render = |page: &mut Vec<u8>| -> std::io::Result<()> {
        let man = clap_mangen::Man::new(command.clone());
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        man.render_options_section(page)?;
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            page.extend_from_slice(
                format!(".SH \"COMMAND: {}\"\n", name.to_uppercase()).as_bytes(),
            );
            let sub_man = clap_mangen::Man::new(sub.clone().bin_name(format!("ducc {name}")));
            sub_man.render_synopsis_section(page)?;
            sub_man.render_description_section(page)?;
            sub_man.render_options_section(page)?;
        }
        man.render_extra_section(page)?;
        man.render_version_section(page)?;
        Ok(())
    };
    render(&mut page)
        .map_err(|e| Failure::Run(anyhow::Error::new(e).context("cannot render the man page")))?;
    print_bytes(&page)
}
