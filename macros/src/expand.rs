//! The expansion behind `#[greenrt::main]` and `#[greenrt::test]`.
//!
//! Everything here works on `proc_macro2` types rather than `proc_macro` ones, because
//! `proc_macro` can only be used while the compiler is running a macro; this way the unit
//! tests at the bottom can call [`expand`] directly.
//!
//! The flow is: read the settings, check the function, and then either rewrite the
//! function or, if anything was wrong, hand back the function untouched next to the
//! errors.

use std::fmt::Display;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Expr, ExprLit, Ident, ItemFn, Lit, Meta, Path, ReturnType, Token};

/// Which of the two attributes is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    Main,
    Test,
}

impl Attr {
    /// How the attribute is spelled in error messages. Users write it through the
    /// `greenrt` re-export, so that is the name they will recognise.
    fn name(self) -> &'static str {
        match self {
            Attr::Main => "#[greenrt::main]",
            Attr::Test => "#[greenrt::test]",
        }
    }
}

/// Expands `#[greenrt::main]` or `#[greenrt::test]`: `args` is what was written between
/// the attribute's parentheses and `item` is the item it was put on.
pub(crate) fn expand(attr: Attr, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new(attr);
    let settings = parse_settings(args, &mut errors);

    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(not_a_fn) => {
            // syn points at the first token that cannot start a function (`struct`, `mod`,
            // ...), which is the right place; only its wording is replaced.
            errors.push_at(not_a_fn.span(), "can only be applied to a function");
            return with_errors(item, errors);
        }
    };
    check_signature(attr, &function, &mut errors);

    if errors.is_empty() {
        rewrite(attr, function, settings)
    } else {
        with_errors(item, errors)
    }
}

/// Emits the item exactly as written, followed by the errors.
///
/// Keeping the item means code that calls the function still resolves, so the user sees
/// our errors instead of a cascade of "cannot find function" ones, and IDEs keep working.
fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    let mut output = item;
    output.extend(errors.to_compile_errors());
    output
}

/// Collects every mistake instead of stopping at the first, so that one compile shows
/// them all. Each message is prefixed with the attribute's name.
struct Errors {
    attr: Attr,
    combined: Option<syn::Error>,
}

impl Errors {
    fn new(attr: Attr) -> Self {
        Errors {
            attr,
            combined: None,
        }
    }

    /// Reports `message` spanning all of `tokens`.
    fn push(&mut self, tokens: impl ToTokens, message: impl Display) {
        let message = self.prefixed(message);
        self.add(syn::Error::new_spanned(tokens, message));
    }

    fn push_at(&mut self, span: Span, message: impl Display) {
        let message = self.prefixed(message);
        self.add(syn::Error::new(span, message));
    }

    /// Re-reports syn's own parse errors with the attribute's name in front, since
    /// "expected `,`" alone does not say which attribute is unhappy.
    fn push_syn(&mut self, error: syn::Error) {
        for error in error {
            self.push_at(error.span(), error);
        }
    }

    fn prefixed(&self, message: impl Display) -> String {
        format!("{}: {message}", self.attr.name())
    }

    fn add(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    fn to_compile_errors(&self) -> TokenStream {
        self.combined
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// The settings the attributes accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    WorkerThreads,
    StackSize,
    Crate,
}

impl Setting {
    /// In the order they are listed in the "unknown setting" message.
    const ALL: [Setting; 3] = [Setting::WorkerThreads, Setting::StackSize, Setting::Crate];

    fn name(self) -> &'static str {
        match self {
            Setting::WorkerThreads => "worker_threads",
            Setting::StackSize => "stack_size",
            Setting::Crate => "crate",
        }
    }

    /// A correct use, quoted in messages about a wrong one.
    fn example(self) -> &'static str {
        match self {
            Setting::WorkerThreads => "worker_threads = 4",
            Setting::StackSize => "stack_size = 1_048_576",
            Setting::Crate => "crate = \"::greenrt\"",
        }
    }

    /// The smallest value an integer setting accepts (`crate` is not one). Only what is
    /// meaningless is rejected here; whether a stack size is large enough is the
    /// runtime's call.
    fn minimum(self) -> usize {
        match self {
            Setting::WorkerThreads => 1,
            Setting::StackSize | Setting::Crate => 0,
        }
    }

    /// The largest value an integer setting accepts at expansion time: the worker count
    /// is bounded by greenrt's `MAX_WORKER_THREADS` (1024; this crate cannot name it).
    /// The stack size range is left to the runtime, as its page rounding is.
    fn maximum(self) -> usize {
        match self {
            Setting::WorkerThreads => 1024,
            Setting::StackSize | Setting::Crate => usize::MAX,
        }
    }

    fn from_path(path: &Path) -> Option<Setting> {
        let ident = path.get_ident()?;
        Setting::ALL
            .into_iter()
            .find(|setting| ident == setting.name())
    }
}

/// What the attribute's arguments asked for. `None` means the setting was not given (or
/// was wrong), and then the runtime's own default applies.
#[derive(Default)]
struct Settings {
    /// Kept as literals carrying the span of the value in the attribute, so anything
    /// rustc says about the generated builder call points there.
    worker_threads: Option<Literal>,
    stack_size: Option<Literal>,
    krate: Option<Path>,
}

fn parse_settings(args: TokenStream, errors: &mut Errors) -> Settings {
    let mut settings = Settings::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push_syn(error);
            return settings;
        }
    };

    let mut seen = Vec::new();
    for meta in metas {
        let Some(setting) = Setting::from_path(meta.path()) else {
            let known: Vec<String> = Setting::ALL
                .iter()
                .map(|setting| format!("`{}`", setting.name()))
                .collect();
            errors.push(
                meta.path(),
                format_args!(
                    "unknown setting `{}`; expected one of {}",
                    path_to_string(meta.path()),
                    known.join(", ")
                ),
            );
            continue;
        };
        if seen.contains(&setting) {
            errors.push(
                meta.path(),
                format_args!("`{}` is set more than once", setting.name()),
            );
            continue;
        }
        seen.push(setting);

        let Meta::NameValue(name_value) = &meta else {
            errors.push(
                &meta,
                format_args!(
                    "`{}` needs a value, e.g. `{}`",
                    setting.name(),
                    setting.example()
                ),
            );
            continue;
        };
        let value = &name_value.value;
        match setting {
            Setting::WorkerThreads => {
                settings.worker_threads = integer_value(setting, value, errors)
            }
            Setting::StackSize => settings.stack_size = integer_value(setting, value, errors),
            Setting::Crate => settings.krate = crate_path(value, errors),
        }
    }
    settings
}

/// Reads a `usize` setting. Only literals are accepted because the value is needed at
/// expansion time, to reject nonsense such as zero worker threads before the program runs.
fn integer_value(setting: Setting, value: &Expr, errors: &mut Errors) -> Option<Literal> {
    let literal = match without_invisible_groups(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Int(literal),
            ..
        }) => literal,
        other => {
            errors.push(
                other,
                format_args!(
                    "`{}` must be an integer literal, e.g. `{}`",
                    setting.name(),
                    setting.example()
                ),
            );
            return None;
        }
    };
    // The builder takes `usize`; any other suffix could only end in a type error.
    if !matches!(literal.suffix(), "" | "usize") {
        errors.push(
            literal,
            format_args!(
                "`{}` is a `usize`; remove the `{}` suffix",
                setting.name(),
                literal.suffix()
            ),
        );
        return None;
    }

    // syn reads `-1` inside an attribute as one negative literal, which `usize` parsing
    // rejects with an unhelpful "invalid digit"; it is really a value below the minimum.
    let negative = literal.base10_digits().starts_with('-');
    let minimum = setting.minimum();
    let maximum = setting.maximum();
    match literal.base10_parse::<usize>() {
        Ok(number) if number > maximum => {
            errors.push(
                literal,
                format_args!("`{}` must be at most {maximum}", setting.name()),
            );
            None
        }
        Ok(number) if number >= minimum => {
            let mut emitted = Literal::usize_unsuffixed(number);
            emitted.set_span(literal.span());
            Some(emitted)
        }
        Err(error) if !negative => {
            errors.push(literal, format_args!("`{}`: {error}", setting.name()));
            None
        }
        Ok(_) | Err(_) => {
            let message = if minimum == 0 {
                format!("`{}` cannot be negative", setting.name())
            } else {
                format!("`{}` must be at least {minimum}", setting.name())
            };
            errors.push(literal, message);
            None
        }
    }
}

/// Reads `crate = "path"`. A string, as in serde's `crate = "..."`, because a bare path
/// after `=` is not something every tool expects inside an attribute.
fn crate_path(value: &Expr, errors: &mut Errors) -> Option<Path> {
    match without_invisible_groups(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => match literal.parse::<Path>() {
            Ok(path) => Some(path),
            Err(error) => {
                errors.push(
                    literal,
                    format_args!("`crate` must be a path such as \"::greenrt\": {error}"),
                );
                None
            }
        },
        other => {
            errors.push(
                other,
                format_args!(
                    "`crate` must be a string literal holding a path, e.g. `{}`",
                    Setting::Crate.example()
                ),
            );
            None
        }
    }
}

/// `macro_rules!` wraps `$value:expr` fragments in invisible groups; look through them so
/// `#[greenrt::main(worker_threads = $n)]` works inside a macro.
fn without_invisible_groups(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}

fn path_to_string(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Rejects functions that cannot be a `main` or a test, in terms of the attribute rather
/// than leaving rustc to object to the generated code.
fn check_signature(attr: Attr, function: &ItemFn, errors: &mut Errors) {
    let inputs = &function.sig.inputs;
    match attr {
        // Only `main` itself: the attribute also works on helper functions, whose
        // arguments are simply moved into the runtime's closure.
        Attr::Main if !inputs.is_empty() && function.sig.ident == "main" => {
            errors.push(inputs, "`main` cannot take arguments");
        }
        Attr::Test if !inputs.is_empty() => {
            errors.push(inputs, "test functions cannot take arguments");
        }
        Attr::Main | Attr::Test => {}
    }
    // The body becomes a call to the runtime, which no `const fn` can make.
    if let Some(constness) = &function.sig.constness {
        errors.push(
            constness,
            "cannot be applied to a `const fn`: it runs the body on a runtime, which a \
             constant cannot do; remove `const`",
        );
    }

    if attr == Attr::Test {
        // Attributes written after ours are still on the item; a `#[test]` among them would
        // register the function a second time.
        if let Some(test) = function.attrs.iter().find(|attr| is_test_attribute(attr)) {
            errors.push(
                test,
                "the function already has a `#[test]` attribute; remove it, this attribute adds one",
            );
        }
    }
}

/// `#[test]`, or the fully qualified form that macros such as this one emit.
fn is_test_attribute(attr: &Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    match segments.as_slice() {
        [only] => only == "test",
        [first, .., last] => (first == "core" || first == "std") && last == "test",
        [] => false,
    }
}

/// Builds the new function: same attributes, visibility and signature (minus `async`),
/// with a body that builds a runtime and runs the original body on it.
fn rewrite(attr: Attr, function: ItemFn, settings: Settings) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    // syn keeps a body's `#![...]` attributes with the outer ones. They must go back inside
    // the function's braces, where they still cover the closure that holds the body.
    let (inner_attrs, outer_attrs): (Vec<Attribute>, Vec<Attribute>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let asyncness = sig.asyncness.take();
    // An `async fn` owns its parameters: they live in its future and are dropped when the
    // body ends, even those the body never mentions (an `async move` block would not
    // capture those, so they would be dropped after the runtime shut down). As rustc's
    // own desugaring does, each typed parameter gets a plain name in the signature and is
    // moved into the block, where the user's pattern binds it.
    let mut moved_params = Vec::new();
    if asyncness.is_some() {
        for (index, input) in sig.inputs.iter_mut().enumerate() {
            match input {
                syn::FnArg::Typed(typed) => {
                    let name = Ident::new(&format!("__greenrt_arg{index}"), Span::mixed_site());
                    let pat = std::mem::replace(
                        &mut *typed.pat,
                        syn::Pat::Ident(syn::PatIdent {
                            attrs: Vec::new(),
                            by_ref: None,
                            mutability: None,
                            ident: name.clone(),
                            subpat: None,
                        }),
                    );
                    moved_params.push(quote! {
                        let #name = #name;
                        let #pat = #name;
                    });
                }
                syn::FnArg::Receiver(receiver) => {
                    let this = &receiver.self_token;
                    moved_params.push(quote! { let _ = &#this; });
                }
            }
        }
    }
    let (output, output_span) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span()),
        ReturnType::Type(_, ty) => (ty.to_token_stream(), ty.span()),
    };

    let krate = settings
        .krate
        .unwrap_or_else(|| syn::parse_quote!(::greenrt));
    let worker_threads = settings
        .worker_threads
        .map(|count| quote!(.worker_threads(#count)));
    let stack_size = settings.stack_size.map(|bytes| quote!(.stack_size(#bytes)));

    // Mixed-site hygiene: the body cannot see these names, so it can neither use the
    // runtime by accident nor be broken by declaring variables with the same names.
    let runtime = Ident::new("__greenrt_rt", Span::mixed_site());
    let body = Ident::new("__greenrt_body", Span::mixed_site());

    let run_body = if let Some(async_token) = asyncness {
        // Coercing to `dyn Future<Output = #output>` states the function's return type
        // right where the future is made, so what `?` and `return` in the body convert
        // into is written in the expansion rather than left for inference to carry back
        // from `block_on`'s result. It also means `block_on` is compiled once per output
        // type instead of once per function, which adds up over many async tests.
        //
        // The spans send type errors to the user's code instead of the attribute: a body
        // of the wrong type is reported at its tail expression, as in an `async fn`.
        let async_move = quote_spanned!(async_token.span=> async move);
        let pinned = quote_spanned!(output_span=> ::core::pin::pin!(#body));
        // The tail goes through a binding of the declared type, so it is coerced to it
        // (`Box::new(closure)` to `Box<dyn Fn()>`) as in the original `async fn`; the
        // async block's own output type is inferred from its tail alone.
        let out = Ident::new("__greenrt_out", Span::mixed_site());
        // `impl Trait` cannot be written as a binding's type or a `dyn Future` output:
        // then the body's own type goes to `block_on`, and the signature checks it.
        let opaque = contains_impl_trait(&sig.output);
        let typed_out = if opaque {
            quote!(#out)
        } else {
            quote_spanned!(output_span=> #out: #output)
        };
        let erased = if opaque {
            quote!(let #body = #pinned;)
        } else {
            quote! {
                let #body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output>> =
                    #pinned;
            }
        };
        quote! {
            let #body = #async_move {
                #(#moved_params)*
                let #typed_out = #block;
                // After a body that diverges (`loop {}`, `return`, `panic!`), this is
                // unreachable code the user did not write: no warning for it.
                #[allow(unreachable_code)]
                let #out = #out;
                #out
            };
            #erased
            #runtime.block_on(#body)
        }
    } else {
        // The closure declares the function's return type so that `?` and `return` in
        // the body mean what they meant in the function; with no return type that is
        // `()`, as for the function.
        // A closure cannot declare an `impl Trait` return type: then the body's own
        // type is the closure's, and the function's signature checks it.
        if contains_impl_trait(&sig.output) {
            quote! {
                #runtime.run(move || #block)
            }
        } else {
            quote! {
                #runtime.run(move || -> #output #block)
            }
        }
    };

    let test_attr = (attr == Attr::Test).then(|| quote!(#[::core::prelude::v1::test]));

    quote! {
        #test_attr
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            let #runtime = #krate::runtime::Builder::new()
                #worker_threads
                #stack_size
                .build()
                .expect("greenrt: failed to build the runtime");
            #run_body
        }
    }
}

/// Whether `impl Trait` appears anywhere in the return type.
fn contains_impl_trait(output: &ReturnType) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(output.to_token_stream())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::{Item, LitStr, Stmt};

    fn expand_str(attr: Attr, args: &str, item: &str) -> TokenStream {
        expand(attr, args.parse().unwrap(), item.parse().unwrap())
    }

    /// Tokens as text without whitespace, because how proc_macro2 spaces its output
    /// (`>>` versus `> >`) depends on how the tokens were made, not on what they mean.
    fn tokens_string(tokens: impl ToTokens) -> String {
        tokens
            .to_token_stream()
            .to_string()
            .split_whitespace()
            .collect()
    }

    /// Expands input that is expected to be wrong, checks that the messages are exactly
    /// `expected`, and that the item comes back unchanged next to them.
    #[track_caller]
    fn assert_errors(attr: Attr, args: &str, item: &str, expected: &[&str]) {
        let output = expand_str(attr, args, item);
        let file: syn::File = syn::parse2(output).expect("error output is valid Rust");

        let mut messages = Vec::new();
        let mut others = Vec::new();
        for item in file.items {
            match item {
                Item::Macro(mac) if tokens_string(&mac.mac.path) == "::core::compile_error" => {
                    messages.push(mac.mac.parse_body::<LitStr>().unwrap().value());
                }
                other => others.push(other),
            }
        }

        assert_eq!(messages, expected);
        let original: Item = syn::parse_str(item).unwrap();
        assert_eq!(others.len(), 1, "exactly the original item is emitted");
        assert_eq!(tokens_string(&others[0]), tokens_string(original));
    }

    fn expand_ok(attr: Attr, args: &str, item: &str) -> ItemFn {
        let output = expand_str(attr, args, item);
        syn::parse2(output.clone())
            .unwrap_or_else(|error| panic!("expected a single fn ({error}), got:\n{output}"))
    }

    /// The statement that builds the runtime, as a list of calls: the constructor path
    /// first, then each method with its arguments.
    fn builder_calls(function: &ItemFn) -> Vec<String> {
        let Stmt::Local(local) = &function.block.stmts[0] else {
            panic!("first statement should build the runtime");
        };
        let mut expr = &*local.init.as_ref().unwrap().expr;
        let mut calls = Vec::new();
        while let Expr::MethodCall(call) = expr {
            // Unsquashed, to keep the spaces inside the `expect` message.
            calls.push(format!("{}({})", call.method, call.args.to_token_stream()));
            expr = &call.receiver;
        }
        let Expr::Call(constructor) = expr else {
            panic!(
                "the chain should start with a call, got {}",
                tokens_string(expr)
            );
        };
        calls.push(format!("{}()", tokens_string(&constructor.func)));
        calls.reverse();
        calls
    }

    const EXPECT: &str = "expect(\"greenrt: failed to build the runtime\")";

    /// The closure handed to `Runtime::run` in a rewritten sync function.
    fn run_closure(function: &ItemFn) -> &syn::ExprClosure {
        let Some(Stmt::Expr(Expr::MethodCall(call), None)) = function.block.stmts.last() else {
            panic!("the body should end in a method call");
        };
        assert_eq!(call.method, "run");
        assert_eq!(tokens_string(&call.receiver), "__greenrt_rt");
        let Some(Expr::Closure(closure)) = call.args.first() else {
            panic!("run should be given a closure");
        };
        assert!(closure.capture.is_some(), "the closure should be `move`");
        closure
    }

    // ---- valid input ----

    #[test]
    fn plain_main_runs_its_body_in_the_runtime() {
        let function = expand_ok(Attr::Main, "", "fn main() { println!(\"hi\"); }");

        assert_eq!(function.sig.ident, "main");
        assert_eq!(
            builder_calls(&function),
            ["::greenrt::runtime::Builder::new()", "build()", EXPECT]
        );
        let closure = run_closure(&function);
        assert_eq!(tokens_string(&closure.output), "->()");
        assert_eq!(
            tokens_string(&closure.body),
            tokens_string(quote!({
                println!("hi");
            }))
        );
    }

    #[test]
    fn settings_become_builder_calls() {
        let function = expand_ok(
            Attr::Main,
            "stack_size = 1_048_576, worker_threads = 4usize, crate = \"crate::rt\",",
            "fn main() {}",
        );
        // Fixed order whatever the attribute's order; the builder calls are independent.
        assert_eq!(
            builder_calls(&function),
            [
                "crate::rt::runtime::Builder::new()",
                "worker_threads(4)",
                "stack_size(1048576)",
                "build()",
                EXPECT
            ]
        );
    }

    #[test]
    fn return_type_is_declared_on_the_closure() {
        let function = expand_ok(
            Attr::Main,
            "worker_threads = 1",
            "pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
                 let n: u32 = \"4\".parse()?;
                 if n == 0 { return Ok(()); }
                 Ok(())
             }",
        );
        assert_eq!(tokens_string(&function.vis), "pub(crate)");
        assert_eq!(
            tokens_string(&function.sig.output),
            tokens_string(quote!(-> Result<(), Box<dyn std::error::Error>>))
        );
        let closure = run_closure(&function);
        assert_eq!(
            tokens_string(&closure.output),
            tokens_string(quote!(-> Result<(), Box<dyn std::error::Error>>))
        );
    }

    #[test]
    fn helper_functions_may_take_arguments() {
        let function = expand_ok(Attr::Main, "", "fn serve(port: u16) -> u16 { port + 1 }");
        assert_eq!(tokens_string(&function.sig.inputs), "port:u16");
        assert_eq!(tokens_string(&run_closure(&function).output), "->u16");
    }

    #[test]
    fn async_main_loses_async_and_uses_block_on() {
        let function = expand_ok(
            Attr::Main,
            "worker_threads = 2",
            "async fn main() -> std::io::Result<()> { std::future::ready(()).await; Ok(()) }",
        );
        assert!(function.sig.asyncness.is_none());
        assert_eq!(
            builder_calls(&function),
            [
                "::greenrt::runtime::Builder::new()",
                "worker_threads(2)",
                "build()",
                EXPECT
            ]
        );

        let stmts = &function.block.stmts;
        assert_eq!(stmts.len(), 4, "build, async block, pin, block_on");
        let Stmt::Local(future) = &stmts[1] else {
            panic!("second statement should bind the future");
        };
        let Expr::Async(block) = &*future.init.as_ref().unwrap().expr else {
            panic!("the body should become an async block");
        };
        assert!(block.capture.is_some(), "the async block should be `move`");
        // The body, bound with the declared type so its tail is coerced to it.
        assert_eq!(
            tokens_string(&block.block),
            tokens_string(quote!({
                let __greenrt_out: std::io::Result<()> = {
                    std::future::ready(()).await;
                    Ok(())
                };
                #[allow(unreachable_code)]
                let __greenrt_out = __greenrt_out;
                __greenrt_out
            }))
        );

        let Stmt::Local(pinned) = &stmts[2] else {
            panic!("third statement should pin the future");
        };
        let syn::Pat::Type(pinned) = &pinned.pat else {
            panic!("the pinned future should have a type annotation");
        };
        assert_eq!(
            tokens_string(&pinned.ty),
            tokens_string(quote!(
                ::core::pin::Pin<&mut dyn ::core::future::Future<Output = std::io::Result<()>>>
            ))
        );

        let Stmt::Expr(Expr::MethodCall(call), None) = &stmts[3] else {
            panic!("the body should end in block_on");
        };
        assert_eq!(call.method, "block_on");
    }

    #[test]
    fn async_fn_without_return_type_outputs_unit() {
        let function = expand_ok(Attr::Test, "", "async fn works() {}");
        let Stmt::Local(pinned) = &function.block.stmts[2] else {
            panic!("third statement should pin the future");
        };
        assert!(tokens_string(&pinned.pat).contains("Output=()"));
    }

    #[test]
    fn test_adds_test_attribute_and_keeps_the_others() {
        let function = expand_ok(
            Attr::Test,
            "",
            "/// Docs.
             #[should_panic(expected = \"boom\")]
             #[ignore]
             fn explodes() { panic!(\"boom\") }",
        );
        let attrs: Vec<String> = function.attrs.iter().map(tokens_string).collect();
        assert_eq!(
            attrs,
            [
                "#[::core::prelude::v1::test]",
                "#[doc=\"Docs.\"]",
                "#[should_panic(expected=\"boom\")]",
                "#[ignore]",
            ]
        );
        assert_eq!(tokens_string(&run_closure(&function).output), "->()");
    }

    #[test]
    fn main_does_not_add_test_attribute() {
        let function = expand_ok(Attr::Main, "", "#[inline(never)] fn main() {}");
        let attrs: Vec<String> = function.attrs.iter().map(tokens_string).collect();
        assert_eq!(attrs, ["#[inline(never)]"]);
    }

    #[test]
    fn inner_attributes_stay_inside_the_body() {
        let output = expand_str(
            Attr::Main,
            "",
            "fn main() { #![allow(unused_variables)] let x = 1; }",
        );
        let function: ItemFn = syn::parse2(output).unwrap();
        let (inner, outer): (Vec<_>, Vec<_>) = function
            .attrs
            .iter()
            .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
        assert!(outer.is_empty());
        assert_eq!(inner.len(), 1);
        assert_eq!(tokens_string(inner[0]), "#![allow(unused_variables)]");
    }

    #[test]
    fn values_are_read_through_invisible_groups() {
        // What `macro_rules!` passes for `worker_threads = $n` with `$n:expr`.
        let value = proc_macro2::Group::new(proc_macro2::Delimiter::None, quote!(3));
        let output = expand(
            Attr::Main,
            quote!(worker_threads = #value),
            quote!(
                fn main() {}
            ),
        );
        let function: ItemFn = syn::parse2(output).unwrap();
        assert_eq!(builder_calls(&function)[1], "worker_threads(3)");
    }

    // ---- wrong input: errors, and the function comes back untouched ----

    #[test]
    fn main_with_arguments() {
        assert_errors(
            Attr::Main,
            "",
            "fn main(argc: i32, argv: i32) {}",
            &["#[greenrt::main]: `main` cannot take arguments"],
        );
    }

    #[test]
    fn test_with_arguments() {
        assert_errors(
            Attr::Test,
            "",
            "async fn takes(x: u8) {}",
            &["#[greenrt::test]: test functions cannot take arguments"],
        );
    }

    #[test]
    fn unknown_setting() {
        assert_errors(
            Attr::Main,
            "workers = 4",
            "fn main() {}",
            &[
                "#[greenrt::main]: unknown setting `workers`; expected one of \
               `worker_threads`, `stack_size`, `crate`",
            ],
        );
        assert_errors(
            Attr::Test,
            "runtime::workers = 4",
            "fn t() {}",
            &[
                "#[greenrt::test]: unknown setting `runtime::workers`; expected one of \
               `worker_threads`, `stack_size`, `crate`",
            ],
        );
    }

    #[test]
    fn setting_given_twice() {
        assert_errors(
            Attr::Main,
            "worker_threads = 2, stack_size = 65536, worker_threads = 2",
            "fn main() {}",
            &["#[greenrt::main]: `worker_threads` is set more than once"],
        );
    }

    #[test]
    fn setting_given_twice_is_reported_even_if_the_first_was_wrong() {
        assert_errors(
            Attr::Main,
            "crate = 1, crate = \"::greenrt\"",
            "fn main() {}",
            &[
                "#[greenrt::main]: `crate` must be a string literal holding a path, \
                 e.g. `crate = \"::greenrt\"`",
                "#[greenrt::main]: `crate` is set more than once",
            ],
        );
    }

    #[test]
    fn zero_worker_threads() {
        assert_errors(
            Attr::Test,
            "worker_threads = 0",
            "#[ignore] fn t() {}",
            &["#[greenrt::test]: `worker_threads` must be at least 1"],
        );
    }

    #[test]
    fn negative_values() {
        assert_errors(
            Attr::Main,
            "worker_threads = -1",
            "fn main() {}",
            &["#[greenrt::main]: `worker_threads` must be at least 1"],
        );
        assert_errors(
            Attr::Main,
            "stack_size = -4096",
            "fn main() {}",
            &["#[greenrt::main]: `stack_size` cannot be negative"],
        );
    }

    #[test]
    fn zero_stack_size_is_left_to_the_runtime() {
        let function = expand_ok(Attr::Main, "stack_size = 0", "fn main() {}");
        assert_eq!(builder_calls(&function)[1], "stack_size(0)");
    }

    #[test]
    fn values_that_are_not_usize_literals() {
        let expected = "#[greenrt::main]: `worker_threads` must be an integer literal, \
                        e.g. `worker_threads = 4`";
        for value in ["\"4\"", "four", "2.0", "N + 1", "(4)"] {
            assert_errors(
                Attr::Main,
                &format!("worker_threads = {value}"),
                "fn main() {}",
                &[expected],
            );
        }
        assert_errors(
            Attr::Main,
            "stack_size = true",
            "fn main() {}",
            &[
                "#[greenrt::main]: `stack_size` must be an integer literal, \
               e.g. `stack_size = 1_048_576`",
            ],
        );
    }

    #[test]
    fn integer_with_another_suffix() {
        assert_errors(
            Attr::Main,
            "worker_threads = 4u8",
            "fn main() {}",
            &["#[greenrt::main]: `worker_threads` is a `usize`; remove the `u8` suffix"],
        );
    }

    #[test]
    fn integer_too_large_for_usize() {
        assert_errors(
            Attr::Main,
            "stack_size = 999999999999999999999999",
            "fn main() {}",
            &["#[greenrt::main]: `stack_size`: number too large to fit in target type"],
        );
    }

    #[test]
    fn setting_without_value() {
        assert_errors(
            Attr::Main,
            "worker_threads",
            "fn main() {}",
            &["#[greenrt::main]: `worker_threads` needs a value, e.g. `worker_threads = 4`"],
        );
        assert_errors(
            Attr::Main,
            "stack_size(4096)",
            "fn main() {}",
            &["#[greenrt::main]: `stack_size` needs a value, e.g. `stack_size = 1_048_576`"],
        );
    }

    #[test]
    fn crate_that_is_not_a_path() {
        assert_errors(
            Attr::Main,
            "crate = \"not a path\"",
            "fn main() {}",
            &[
                "#[greenrt::main]: `crate` must be a path such as \"::greenrt\": \
               unexpected token",
            ],
        );
    }

    #[test]
    fn arguments_that_do_not_parse() {
        assert_errors(
            Attr::Main,
            "4",
            "fn main() {}",
            &["#[greenrt::main]: expected identifier"],
        );
        assert_errors(
            Attr::Main,
            "worker_threads = 4 stack_size = 5",
            "fn main() {}",
            &["#[greenrt::main]: expected `,`"],
        );
    }

    #[test]
    fn not_a_function() {
        assert_errors(
            Attr::Main,
            "",
            "pub struct Config { workers: usize }",
            &["#[greenrt::main]: can only be applied to a function"],
        );
        assert_errors(
            Attr::Test,
            "",
            "mod tests {}",
            &["#[greenrt::test]: can only be applied to a function"],
        );
    }

    #[test]
    fn second_test_attribute() {
        assert_errors(
            Attr::Test,
            "",
            "#[test] fn twice() {}",
            &[
                "#[greenrt::test]: the function already has a `#[test]` attribute; \
               remove it, this attribute adds one",
            ],
        );
        assert_errors(
            Attr::Test,
            "",
            "#[::core::prelude::v1::test] fn twice() {}",
            &[
                "#[greenrt::test]: the function already has a `#[test]` attribute; \
               remove it, this attribute adds one",
            ],
        );
    }

    #[test]
    fn all_errors_are_reported_together() {
        assert_errors(
            Attr::Main,
            "workers = 1, worker_threads = 0, worker_threads = 2",
            "async fn main(args: Vec<String>) {}",
            &[
                "#[greenrt::main]: unknown setting `workers`; expected one of \
                 `worker_threads`, `stack_size`, `crate`",
                "#[greenrt::main]: `worker_threads` must be at least 1",
                "#[greenrt::main]: `worker_threads` is set more than once",
                "#[greenrt::main]: `main` cannot take arguments",
            ],
        );
    }
}
