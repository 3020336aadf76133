//! The task-demand cues and the prior they make.
use super::*;

/// The head's feature list names the task features in the same order,
/// after the cheap ones and before the prior.
#[test]
fn the_heads_feature_list_matches() {
    use crate::classifier::head::{FEATURES, PRIOR_FEATURE};
    use crate::classifier::train_config::LEGACY_FEATURES;
    let end = LEGACY_FEATURES + TASK_FEATURES.len();
    assert_eq!(&FEATURES[LEGACY_FEATURES..end], TASK_FEATURES);
    assert_eq!(PRIOR_FEATURE, end);
    assert_eq!(FEATURES[PRIOR_FEATURE], "task_prior");
    assert_eq!(FEATURES.len(), end + 1);
}

fn p(text: &str) -> f32 {
    cues(text).prior()
}

/// Asserts that `cue` is 0 on every text.
fn none_of(cue: impl Fn(&str) -> f32, texts: &[&str]) {
    for t in texts {
        assert_eq!(cue(t), 0.0, "{t}");
    }
}

#[test]
fn words_and_phrases() {
    assert_eq!(
        words("it's 3.5 km, isn't it?"),
        vec!["it's", "3", "5", "km", "isn't", "it"]
    );
    let s = joined(&words("write a function that sorts; write a function"));
    assert_eq!(count(&s, &["write a function"]), 2.0);
    assert_eq!(count(&s, &["sort"]), 0.0, "whole words only");
    // As a search for " no " in " no no no ": adjacent matches do not share
    // the space between them, so the middle one is not counted.
    assert_eq!(count(&joined(&words("no no no")), &["no"]), 2.0);
    assert_eq!(count(&joined(&words("a b a b x a b")), &["a b", "x"]), 3.0);
    assert_eq!(count(&joined(&words("")), &["a"]), 0.0);
    assert_eq!(numbers("1,000 apples cost $3.50 and 7"), 3);
}

#[test]
fn the_rule_orders_task_types() {
    let logic = "Premises:\nAll cats are mammals.\nNo mammal is a fish.\nIf Tom is a cat, then Tom \
                 purrs.\n\nIs the following conclusion true, false, or uncertain?\nConclusion: Tom is a fish.";
    let lookup = "who sang the song hey jude";
    let puzzle =
        "Count the letters r in strawberry and sort these words alphabetically: pear, fig, apple.";
    let essay =
        "What if the moon disappeared? Explain the consequences for life on Earth in detail.";
    let summary = format!(
        "Summarize the following article:\n\n{}",
        "The council met on Monday. ".repeat(40)
    );
    let words_math =
        "Tom has 12 apples and gives 3 to each of his 2 friends. How many apples are left?";
    // Quantities in words, not digits.
    let spelled_math = "A baker sells a dozen rolls every morning and half as many in the \
                        evening. She bakes three trays twice a week. How many rolls are left?";
    for hard in [logic, puzzle, essay, words_math, spelled_math] {
        assert!(p(hard) > 0.5, "{hard}: {}", p(hard));
    }
    for simple in [
        lookup,
        "when was the letter j introduced to the alphabet",
        "who created the characters of the addams family",
        summary.as_str(),
        "hi, how are you?",
        "Write a haiku about rain",
    ] {
        assert!(p(simple) < 0.0, "{simple}: {}", p(simple));
    }
    assert!(p(logic) > p(lookup) + 3.0);
    // The cues themselves: quantities in words count as numbers, and
    // letters or characters are puzzle work only with an operation on them.
    assert!(cues(spelled_math).math_steps > 0.0);
    for lookup in [
        "when was the letter j introduced to the alphabet",
        "who created the characters of the addams family",
    ] {
        assert_eq!(cues(lookup).puzzle, 0.0, "{lookup}");
    }
    assert_eq!(cues("How many vowels are in the word banana?").puzzle, 1.0);
}

#[test]
fn the_ask_is_read_apart_from_the_material() {
    // A short prompt is all ask.
    assert_eq!(
        ask_part("why is the sky blue?", 800, 150, 250),
        "why is the sky blue?"
    );
    // A passage line is material: its words are no ask, the lines around it are.
    let passage = "the committee must explain why costs rose more than planned. ".repeat(20);
    let prompt = format!("summarize the article below.\n{passage}\nkeep it short.");
    let ask = ask_part(&prompt, 800, 150, 250);
    assert!(ask.contains("summarize the article below"));
    assert!(ask.contains("keep it short"));
    assert!(!ask.contains("committee"), "{ask}");
    let c = cues(&prompt);
    assert_eq!((c.essay, c.constraints, c.apply), (0.0, 0.0, 0.0));
    assert!(
        c.transform > 0.0,
        "transform words still count over the whole text"
    );
    // An instruction that runs into its material on one line keeps its head.
    let one_line = format!("Explain the main argument of this essay: {passage}");
    assert!(ask_part(&one_line.to_lowercase(), 800, 150, 250).starts_with("explain the main"));
}

#[test]
fn proofs_and_asked_lengths_are_demands() {
    assert!(cues("Prove that the square root of 2 is irrational.").logic >= 1.0);
    let story = cues("Write a 1000-word short story about a lighthouse keeper.");
    assert_eq!(story.long_write, 2.0, "a story, and a thousand words");
    assert_eq!(
        cues("Write two pages on the French revolution.").long_write,
        1.0
    );
    assert_eq!(
        cues("She reads 30 pages a day and learned 10 words.").long_write,
        0.0
    );
    assert!(cues("List the prime numbers below 50 in descending order.").puzzle > 0.0);
}

#[test]
fn chained_questions_and_word_problems() {
    // Entity-to-entity links inside one question: a chain of look-ups.
    assert_eq!(
        bridges("where is the company that purchased aixam based?"),
        1
    );
    assert_eq!(
        bridges("the band that covered godzilla formed in which city?"),
        2
    );
    assert_eq!(
        bridges("which film directed by him starred the actor known as kit?"),
        2
    );
    assert_eq!(bridges("who wrote pride and prejudice?"), 0);
    assert_eq!(
        bridges("what's the capital of australia?"),
        0,
        "a contraction"
    );
    assert_eq!(bridges("when was fannie lee chaney's son born?"), 1);
    assert_eq!(
        bridges("the company that makes it. who wrote it?"),
        0,
        "questions only"
    );
    // Two quantities and one outright ask for a quantity make a word problem.
    assert!(cues("Sam is 12 and his sister is twice his age. How old is she?").math_steps >= 0.6);
    assert_eq!(cues("how many episodes are in season 3").math_steps, 0.0);
}

#[test]
fn a_stated_rule_applied_to_a_new_case_is_not_a_plain_transform() {
    // A background rule, a new situation and a question about it (no
    // comparative in the question itself) against a plain passage with the
    // same kind of question: only the second is a transform of the text.
    let rule = format!(
        "Background: {}\n\nSituation: Lake A is fed by a cold mountain stream. Lake B sits \
         in a sunny valley and its water is much warmer in summer.\n\nAnswer the following \
         question: Whose fish will struggle in August?",
        "Warmer water holds less dissolved oxygen than colder water, and fish need more \
         oxygen when the water is warmer. "
            .repeat(3)
    );
    let plain = format!(
        "{}\n\nAnswer the following question: Who will open the bridge in August?",
        "The town council met on Monday to vote on the new bridge over the river, and the \
         mayor said the opening ceremony would take place in the summer. "
            .repeat(3)
    );
    let (r, p) = (cues(&rule), cues(&plain));
    assert_eq!((r.compare_q, p.compare_q), (0.0, 0.0));
    assert!(r.apply >= 1.0 && p.apply < 1.0, "{} {}", r.apply, p.apply);
    assert!(r.transform > 0.0 && p.transform > 0.0);
    // The same cues with the rule cue at 1 and just under: only the second
    // takes the transform penalty, a jump far larger than the cue's own weight.
    assert!(r.given_long > 0.0);
    let with_apply = |apply: f32| TaskCues { apply, ..r.clone() }.prior();
    assert!(
        with_apply(1.0) > with_apply(0.99) + 0.5,
        "{} vs {}",
        with_apply(1.0),
        with_apply(0.99)
    );
    assert!(
        r.prior() > p.prior() + 1.0,
        "{} vs {}",
        r.prior(),
        p.prior()
    );
}

#[test]
fn exact_number_work_in_short_asks() {
    assert_eq!(symbolic_ops("what is 3 * 4 + 2^10?"), 3);
    assert_eq!(
        symbolic_ops("on 9/25/2023 we met; x + 1 = y"),
        0,
        "dates, variables"
    );
    let ws = words("what is the 20th prime number and the 3rd term?");
    assert_eq!(nth_items(&ws), 2.0);
    assert_eq!(
        nth_items(&words("who won the 20th season of survivor")),
        0.0
    );
    // Several operations make exact multi-step work; a single one does not.
    assert!(cues("What is 17 squared minus the cube of 4?").math_steps >= 0.7);
    assert!(cues("What is the least common multiple of 12, 18 and 30?").math_steps > 0.0);
    assert_eq!(cues("What is the square root of 81?").math_steps, 0.0);
    assert_eq!(cues("What is 9 plus 6?").math_steps, 0.0);
    assert!(cues("Alphabetize these words: zebra, apple, kiwi.").puzzle > 0.0);
}

#[test]
fn word_problems_leave_quantities_unwritten() {
    let steps = |t: &str| cues(t).math_steps;
    // A relation ("twice as many") and fractions in words stand for quantities.
    let relation = "John eats a bag of chips for dinner and then eats twice as many after \
                    dinner. How many bags of chips did he eat?";
    let fraction = "A snake's head is one-tenth its length. If a snake is 10 feet long, \
                    calculate the length of the rest of its body minus the head.";
    // A story of three sentences holds a quantity it does not write.
    let story = "Farmer Brown raises emus, large birds. His flock has a total of 60 heads \
                 and legs. How many emus are in his flock?";
    // "What" asks for a measure, over four quantities or two in a story.
    let measure = "Bill has played 200 games of poker and won 63% of them. If he plays 100 \
                   more games and loses 43 of them, what is his new win percentage?";
    let story_measure = "Josh built his little brother a rectangular sandbox.  The perimeter \
                         of the sandbox is 30 feet and the length is twice the width. What is \
                         the width of the sandbox?";
    for t in [relation, fraction, story, measure, story_measure] {
        assert!(steps(t) > 0.0, "{t}");
        assert!(p(t) > 0.0, "{t}: {}", p(t));
    }
    // Without the story or with too few quantities, the same asks stay simple.
    for t in [
        "His flock has 60 birds. How many emus are in his flock?",
        "The meeting is at 10 and it is 9:15 now. What time should I remind the team?",
        "My flight lands at 5:30 pm. What time should I leave for the airport?",
        "We have 2 kids, aged 4 and 7. What is a good age to start piano lessons?",
    ] {
        assert_eq!(steps(t), 0.0, "{t}");
        assert!(p(t) < 0.0, "{t}: {}", p(t));
    }
}

#[test]
fn a_short_word_problem_is_not_material_to_transform() {
    // "given" is a transform word; in a word problem it is part of the problem.
    let blake = "Blake gave some of his money to his friend, Connie.  Connie used all the money \
                 she had been given to buy some land.  In one year, the land tripled in value.  \
                 So, she sold the land and gave half of all the money she got from the sale of \
                 the land to Blake.  If Connie gave Blake $30,000, how much money, in dollars, \
                 did Blake initially give to Connie?";
    let c = cues(blake);
    assert!(c.word_problem && c.transform > 0.0 && c.given_long > 0.0);
    let as_material = TaskCues {
        word_problem: false,
        ..c.clone()
    };
    assert!(c.prior() > as_material.prior() + 0.2);
    // A question over a long passage is still a question about material.
    let passage = format!(
        "{} Question: how many goals did the team score in 2 games?",
        "The team played well in the final of the cup. ".repeat(15)
    );
    assert!(!cues(&passage).word_problem);
}

#[test]
fn code_asks_name_their_tools() {
    let code = |t: &str| cues(t).code_task;
    for t in [
        // A version run into the name, a language named with symbols.
        "How can I print to textbox in pyqt6?",
        "How do I read a file line by line in c#?",
        // "How can you", "is there a way", "i need a … code".
        "How can you remove duplicates from a list in Python?",
        "in nodejs, is there a way to make a pull-based stream?",
        "hello, i need a ruby code using sketchup api to draw a cube.",
    ] {
        assert!(code(t) > 0.0, "{t}");
    }
    none_of(
        code,
        &[
            "how do i set an alarm for 6",
            "is there a way to get a refund for my flight",
            "i need a new credit card",
            "what year did c3po first appear",
        ],
    );
    // Pasted Python is code even without braces or semicolons; prose lines
    // that end in a colon are not.
    let python = "this keeps giving me index out of range, can u fix it?\n\n\
                  def last_three(lst):\n    result = []\n    for i in range(len(lst)):\n        \
                  result.append(lst[i])\n    return result\n";
    assert!(code(python) > 0.0);
    assert!(p(python) > 0.5, "{}", p(python));
    let prose = "Read the note below:\nFor example:\nIf so, answer: yes\nThe end.";
    assert_eq!(code(prose), 0.0);
}

#[test]
fn letters_relations_and_odds_are_exact_work() {
    // A letter's plural is a unit of character work next to "how many".
    assert!(cues("how many r's are in strawberry and raspberry combined?").puzzle > 0.0);
    assert_eq!(cues("what's Tom's favourite letter?").puzzle, 0.0);
    // Two or more comparisons to reason over, in a short question.
    let order = "Anna is taller than Ben. Ben is taller than Cara but shorter than Dev. \
                 Who's the second tallest?";
    assert!(cues(order).puzzle >= 1.0);
    assert!(p(order) > 0.0, "{}", p(order));
    assert_eq!(cues("Is a cat bigger than a dog?").puzzle, 0.0);
    let seats = "Five friends sit in a row. Oz sits next to Nia. Lou sits to the right of Mo. \
                 What's the seating order?";
    assert!(cues(seats).puzzle >= 1.0);
    // A measure read off a given text is not worked out.
    let email = "From this email, what time is the meeting and where?\n\n\"Let's do Wednesday \
                 at 2:30 in room 412 on the 4th floor, 3 of us. -Lisa\"";
    assert_eq!(cues(email).math_steps, 0.0);
    assert!(p(email) < 0.0, "{}", p(email));
    // A probability over given quantities is worked out, not looked up.
    let odds = "whats the probability of getting at least two sixes in five rolls of a fair die";
    assert!(cues(odds).math_steps > 0.0);
    // One open-ended essay ask is enough to lean hard.
    assert!(p("what would happen to earths climate if the moon just disappeared") > 0.0);
}

#[test]
fn proofs_calculus_drafts_and_constraints() {
    let prove = "prove there are infinitely many primes";
    assert!(cues(prove).logic > 0.0 && p(prove) > 0.5, "{}", p(prove));
    assert!(cues("write a binary search tree in C with insert and delete").code_task > 0.0);
    assert_eq!(cues("what is a binary search tree").code_task, 0.0);
    // Calculus over an expression is worked out; a definition or a spoken
    // calculator ask is not.
    assert!(cues("integrate x^2 e^x dx").math_steps > 0.0);
    none_of(
        |t| calculus(&joined(&words(t)), t),
        &[
            "what is a derivative",
            "what is the derivative of x squared plus 5",
        ],
    );
    // Powers of variables are operations; "80% of" is a percent-of.
    assert_eq!(symbolic_ops("simplify 2a(2a^2 + a) - a^2"), 2);
    let percent = "He asks for $50,000 a year for 30 years and $200,000 more. If he gets 80% \
                   of it, for much money does he get?";
    assert!(cues(percent).math_steps > 0.0);
    // Drafts of a speech or a contract clause are long writing; "need a" asks.
    for t in [
        "need a best man speech for my brother, funny but heartfelt",
        "draft a non-compete clause for a sales rep, 12 months",
    ] {
        assert!(cues(t).long_write > 0.0, "{t}");
    }
    assert_eq!(cues("i need a new credit card").long_write, 0.0);
    assert!(cues("which is bigger, 2^30 or 10^9? show your work").essay > 0.0);
    // Two or more constraints are heavily constrained writing, not a short ask.
    let constrained =
        "write a paragraph where every sentence starts with A and has exactly 8 words";
    assert!(cues(constrained).constraints >= 2.0);
    assert!(p(constrained) > 0.0, "{}", p(constrained));
}

#[test]
fn equations_and_imperative_proofs() {
    for t in [
        "Find all real x such that |x - 3| + |x + 1| = 6",
        "x+y = 4z, x*y = 4z^2, express x-y in z",
    ] {
        assert!(cues(t).math_steps >= 0.7, "{t}");
    }
    assert_eq!(cues("set x = 5 in the config").math_steps, 0.0);
    assert!(cues("prove sqrt 2 is irrational").logic >= 1.0);
    assert_eq!(cues("what did the experiment prove").logic, 0.0);
    // A true-or-false fact check is a look-up, not formal logic.
    let fact = "true or false: the great wall of china is visible from the moon";
    assert_eq!(cues(fact).logic, 0.0);
    assert!(p(fact) < 0.0, "{}", p(fact));
}

#[test]
fn pasted_data_asked_lengths_and_mechanisms() {
    // JSON data is not code; C is.
    let json =
        "{\n  \"order_id\": \"A-10293\",\n  \"shipping\": {\n    \"zip\": \"97205\"\n  }\n}\n\n\
                what's the shipping zip code";
    assert_eq!(cues(json).code_task, 0.0);
    let c = "int main() {\n  printf(\"%d\", 3);\n  return 0;\n}\nwhat does this print?";
    assert!(cues(c).code_task > 0.0);
    // A time read off a pasted log is not worked out.
    let log = "at what time did the first ERROR happen in this log?\n\n09:12:01 INFO started\n\
               09:13:10 WARN slow query 1200ms\n09:14:02 ERROR db timeout\n09:15:00 INFO ok";
    assert_eq!(cues(log).math_steps, 0.0);
    // Three sentences or bullets or fewer is a short output, not input to compare.
    assert!(cues("Explain this abstract for a non-scientist in 2-3 sentences").one_liner >= 1.0);
    assert!(cues("in 2 or 3 sentences, what are the main points?").one_liner >= 1.0);
    assert_eq!(
        cues("compare the meaning of the two sentences and say if they match").one_liner,
        0.0
    );
    // "How would X affect Y" asks for the mechanism.
    assert!(cues("how would a rise in interest rates affect rents").essay >= 1.0);
    // Days counted on a calendar.
    assert!(cues("how many sundays are there in 2031").puzzle > 0.0);
}

#[test]
fn round_five_cues() {
    assert!(cues("quick one: prove sqrt(3) is irrational").logic >= 1.0);
    let long = format!(
        "{} What did the trial prove?",
        "The jury met again. ".repeat(20)
    );
    assert_eq!(
        cues(&long).logic,
        0.0,
        "a long text's 'prove' is not a proof ask"
    );
    let integral = "∫₀^∞ x² e^(−x) dx   show steps pls, exam tmrw";
    assert!(cues(integral).latex > 0.0 && cues(integral).essay > 0.0);
    let rooms = "given a list of meeting intervals find the minimum number of rooms needed. C++ \
                 please, and state the time complexity";
    assert!(cues(rooms).code_task > 0.0);
    assert!(cues("my flask app crashes with a traceback on startup").code_task > 0.0);
    assert_eq!(cues("my phone keeps crashing, what do i do").code_task, 0.0);
    assert!(cues("write a wedding toast for my sister Maya").long_write > 0.0);
    assert_eq!(
        cues("sort these headlines into Sports / Politics / Tech").puzzle,
        0.0
    );
    assert!(cues("sort these numbers from low to high: 5, 3, 9").puzzle > 0.0);
    assert!(cues("what day of the week was july 4 1776").puzzle > 0.0);
    // A price is not LaTeX.
    assert_eq!(
        cues("is $12 a reasonable price for a dozen eggs").latex,
        0.0
    );
    assert!(cues("Simplify $2a(2a^2 + a)$.").latex > 0.0);
    // "If …, what …?" over a number is worked out; without one it is advice.
    let savings = "Leila spent 3/4 of her savings on make-up and the rest on a sweater. If the \
                   sweater cost her $20, what were her original savings?";
    assert!(cues(savings).math_steps > 0.0);
    assert_eq!(
        cues("If it rains tomorrow, what should I wear?").math_steps,
        0.0
    );
    // A total read off a pasted receipt is not worked out.
    let receipt = "whats the total on this receipt\n\nBANANAS 0.84\nOAT MILK 3.99\nTOTAL 4.83";
    assert_eq!(cues(receipt).math_steps, 0.0);
    // Length speaks for a 300–600 character ask unless it is material to transform.
    let ask = TaskCues {
        given_long: 0.5,
        ln_ask: 2.0,
        ..Default::default()
    };
    let material = TaskCues {
        transform: 1.0,
        ..ask.clone()
    };
    assert!(ask.prior() > material.prior() + 0.9);
}

#[test]
fn code_scope_follows_the_program_asked_for() {
    let scope = |t: &str| cues(t).code_scope;
    // Algorithmic work in an ask to write code lifts it, up to two words.
    assert_eq!(
        scope("Write a function to find the longest palindromic substring."),
        2.0
    );
    assert_eq!(
        scope("implement an LRU cache in Go that is safe for concurrent use"),
        2.0
    );
    assert_eq!(
        scope("write a python function to check if a number is prime"),
        1.0
    );
    // One built-in step or a formula, asked briefly: a one-liner.
    assert_eq!(
        scope("Write a function to find the area of a rectangle."),
        -1.0
    );
    assert_eq!(scope("In Java, how do I convert an int to a String?"), -1.0);
    // A step added to an app is a feature.
    let feature = "how do I add a dark mode toggle to my react app";
    assert!(cues(feature).code_task > 0.0);
    assert_eq!(scope(feature), 0.0);
    assert_eq!(scope("how do I add a key to a dict in python"), -1.0);
    // A question about an algorithm does not ask for one.
    assert_eq!(scope("time complexity of binary search?"), 0.0);
    // A long spec with a step in it is not a one-liner (the same steps
    // asked in a short ask would be).
    let spec = "write a python script that reads every csv in a folder, convert the dates to \
                ISO format, add a column with the file name and write one merged file";
    assert!(cues(spec).code_task > 0.0);
    assert_eq!(scope(spec), 0.0, "{spec}");
    assert_eq!(
        scope("write a python script to convert the dates to ISO format"),
        -1.0
    );
    // Not a code ask: no scope at all.
    assert_eq!(scope("what is the area of a circle with radius 3"), 0.0);
    assert_eq!(scope("write a poem about the longest night"), 0.0);
    // The scope moves the prior, other cues equal.
    let one = cues("Write a function to find the area of a rectangle.");
    let algo = TaskCues {
        code_scope: 1.0,
        ..one.clone()
    };
    assert!(algo.prior() > one.prior());
}
